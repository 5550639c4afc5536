"""plain: implements no hook and has no settings."""

from pnbridge import hookimpl  # noqa: F401
