"""_helper: a module beside the plugins that is not one (its name starts with "_")."""

raise SystemExit("not a plugin")
