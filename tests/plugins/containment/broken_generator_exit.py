"""broken: raises GeneratorExit at import."""

raise GeneratorExit("at import")
