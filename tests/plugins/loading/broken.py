"""broken: cannot be imported."""

raise ImportError("needs the requests module")
