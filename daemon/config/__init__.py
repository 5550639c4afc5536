"""Configuration: the TOML schema as dataclasses, the typed-table converter and its checks, the
paths a config names, the running-instance record, and reload."""
