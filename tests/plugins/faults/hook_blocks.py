"""hook_blocks: a plain event hook that blocks its thread for a second."""

import time

from pnbridge import hookimpl


@hookimpl
def device_registered(event):
    time.sleep(1)
