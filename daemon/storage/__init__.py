"""Storage: the Store interface (interface.py) every engine implements, the SQLite engine
(sqlite/), the writer that batches every write on one thread and the reader's read-only
connections. All SQL of pnbridge is here."""
