"""pbxsync: a plain auth hook raising a BaseException in its thread for user "thread"."""

from pnbridge import hookimpl


class Boom(BaseException):
    pass


@hookimpl
def authenticate_report(username, credentials, report):
    if username == "thread":
        raise Boom("PBX database gone")
    return True
