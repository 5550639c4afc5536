"""The PostgreSQL engine of the Store (psycopg 3, the optional extra ``postgresql``): the
connection (store.py) made of the same parts as the SQLite engine's (devices, journal,
delivery state, push history), the schema and its migrations, and how it connects
(connect.py)."""
