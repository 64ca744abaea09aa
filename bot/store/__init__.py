"""The embedded store: SQLite (WAL) in DATA_DIR. It is the work queue and the build ledger."""
from bot.store.db import Database

__all__ = ["Database"]
