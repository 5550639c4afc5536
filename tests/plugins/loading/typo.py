"""typo: implements a hook whose name is misspelt."""

from pnbridge import hookimpl


@hookimpl
def device_registred(event):
    pass
