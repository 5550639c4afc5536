"""Storage: the SQLite database (schema, migrations, devices, the event journal, delivery state)
and the writer that batches every write on one thread."""
