"""The operator console (docs/console.md): server-rendered pages and actions under
``/console``, on the admin listener."""
