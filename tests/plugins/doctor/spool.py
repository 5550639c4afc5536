"""spool: a doctor check answering a plain tuple."""

from pnbridge import hookimpl


@hookimpl
def doctor(user):
    return [("warn", f"spool is nearly full for {user.name}", "empty /var/spool/x")]
