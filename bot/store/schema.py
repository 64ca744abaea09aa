"""Every table of the store, and opening the store with all of them.

The table modules declare their DDL (``SCHEMA``); the connection module knows
none of them, so imports run one way: schema -> tables -> db.
"""
from __future__ import annotations

from pathlib import Path

from bot.store import builds, checkpoints, deliveries, github_state, heads, pr_heads, prepull_state, replays, repo_facts
from bot.store.db import Database

SCHEMAS: tuple[str, ...] = (
    builds.SCHEMA, checkpoints.SCHEMA, deliveries.SCHEMA, github_state.SCHEMA, heads.SCHEMA, pr_heads.SCHEMA,
    prepull_state.SCHEMA, replays.SCHEMA, repo_facts.SCHEMA)


async def open_store(path: Path | str) -> Database:
    """The store at ``path`` with every table created (idempotent)."""
    return await Database(path).open(SCHEMAS)
