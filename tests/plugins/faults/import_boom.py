"""import_boom: cannot be imported (a dependency is missing)."""

raise RuntimeError("missing dependency")
