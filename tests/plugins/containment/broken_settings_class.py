"""broken: its settings_class hook raises a BaseException."""

from pnbridge import hookimpl


class Boom(BaseException):
    pass


@hookimpl
def settings_class():
    raise Boom("settings")
