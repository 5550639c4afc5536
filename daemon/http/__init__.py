"""HTTP: the adapters between HTTP and the stages: the Quart app (reporter routes, push API, health
and metrics), ASGI glue and the hypercorn worker."""
