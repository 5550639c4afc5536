"""The SQLite engine of the Store: the connection (store.py) made of its parts (devices,
journal, delivery state), the schema and its migrations, and the rows' conversions."""
