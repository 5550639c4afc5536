"""garbage: a doctor check that answers something that is not a finding."""

from pnbridge import hookimpl


@hookimpl
def doctor():
    return ["ok"]
