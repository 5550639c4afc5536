"""stuck: a plain event hook blocked in its thread until the test sets ``release``."""

import threading

from pnbridge import hookimpl

release = threading.Event()


@hookimpl
def device_registered(event):
    release.wait()
