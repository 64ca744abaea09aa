"""Build records: one row per build attempt of an image."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

from cachetools import LRUCache

from bot.model import BuildRequest, BuildState, Phase, Trigger
from bot.store.db import Database

# this module's tables (bot/store/schema.py creates them when the store opens)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    repo TEXT NOT NULL,
    sha TEXT NOT NULL,
    image TEXT NOT NULL,
    supersede_key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    request TEXT NOT NULL,
    cache_from TEXT,
    from_cache INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    log_tail TEXT,
    superseded_by TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS builds_by_image ON builds(image, attempt);
CREATE INDEX IF NOT EXISTS builds_by_state ON builds(state, created_at);
CREATE INDEX IF NOT EXISTS builds_by_job ON builds(job_id);
CREATE INDEX IF NOT EXISTS builds_by_key ON builds(supersede_key, created_at);
-- the lookups by repository compare owner and repo without case (a launch's status read, the
-- newest built image): an index in the default collation cannot serve them, and they scanned the table
DROP INDEX IF EXISTS builds_by_repo;
CREATE INDEX IF NOT EXISTS builds_by_repo_nocase ON builds(owner COLLATE NOCASE, repo COLLATE NOCASE, sha);
"""
)


def build_id(owner: str, repo: str, sha: str, attempt: int) -> str:
    """Deterministic and DNS-label safe, so the pod name doubles as a lock across restarts."""
    digest = hashlib.sha256(f"{owner}/{repo}".lower().encode()).hexdigest()[:8]
    return f"{digest}-{sha[:12].lower()}-{attempt}"


@dataclasses.dataclass(frozen=True)
class BuildRecord:
    id: str
    owner: str
    repo: str
    sha: str
    image: str
    supersede_key: str
    job_id: str
    attempt: int
    state: BuildState
    phase: Phase
    request: BuildRequest
    cache_from: str | None
    from_cache: bool
    reason: str | None
    log_tail: tuple[str, ...]
    superseded_by: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


def request_to_json(req: BuildRequest) -> str:
    d = dataclasses.asdict(req)
    d["trigger"] = req.trigger.value
    return json.dumps(d)


def request_from_json(text: str) -> BuildRequest:
    d = json.loads(text)
    d["trigger"] = Trigger(d.get("trigger", "push"))
    return BuildRequest(**d)


def _record(row: Any) -> BuildRecord:
    return BuildRecord(
        id=row["id"], owner=row["owner"], repo=row["repo"], sha=row["sha"], image=row["image"],
        supersede_key=row["supersede_key"], job_id=row["job_id"], attempt=row["attempt"], state=BuildState(row["state"]),
        phase=Phase(row["phase"]), request=request_from_json(row["request"]), cache_from=row["cache_from"],
        from_cache=bool(row["from_cache"]), reason=row["reason"],
        log_tail=tuple(json.loads(row["log_tail"] or "[]")), superseded_by=row["superseded_by"],
        created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
    )


class BuildStore:
    """Build records. One process owns DATA_DIR, so every write goes through here.

    That makes a cheap cache sound: every write bumps ``generation``, and a read
    cached under an older generation is never returned. The scheduler fans each
    build event (log lines included) out to the job's active records; without the
    cache that is one query per log line on the store's one thread, the thread the
    webhook receiver commits on.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.generation = 0
        self._active_by_job: LRUCache[str, tuple[int, tuple[BuildRecord, ...]]] = LRUCache(maxsize=1024)

    def _written(self) -> None:
        self.generation += 1

    async def create(
        self, req: BuildRequest, image: str, *, state: BuildState = BuildState.QUEUED,
        phase: Phase = Phase.WAITING, from_cache: bool = False, cache_from: str | None = None,
        reason: str | None = None, job_id: str | None = None, started_at: float | None = None,
        now: float | None = None,
    ) -> BuildRecord:
        """A new record for ``image`` (attempt = previous + 1).

        ``job_id`` names the build that actually runs (its pod or process); a record
        that follows another request's running build shares that build's job_id.
        ``now`` is the created time (the scheduler's clock; the queue orders by it).
        """
        now = time.time() if now is None else now
        async with self.db.transaction() as conn:
            # attempts count per id prefix, so two shas sharing 12 hex digits never collide
            prefix = build_id(req.owner, req.repo, req.sha, 0)[:-1]
            cur = await conn.execute("SELECT MAX(attempt) AS a FROM builds WHERE id LIKE ? ESCAPE '\\'",
                                     (prefix.replace("_", "\\_").replace("%", "\\%") + "%",))
            row = await cur.fetchone()
            attempt = (row["a"] or 0) + 1
            bid = build_id(req.owner, req.repo, req.sha, attempt)
            finished = now if state.finished else None
            await conn.execute(
                "INSERT INTO builds (id, owner, repo, sha, image, supersede_key, job_id, attempt, state, phase,"
                " request, cache_from, from_cache, reason, created_at, started_at, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (bid, req.owner, req.repo, req.sha, image, req.supersede_key, job_id or bid, attempt, state.value,
                 phase.value, request_to_json(req), cache_from, int(from_cache), reason, now, started_at, finished),
            )
        self._written()
        rec = await self.get(bid)
        assert rec is not None
        return rec

    async def get(self, bid: str) -> BuildRecord | None:
        row = await self.db.fetchone("SELECT * FROM builds WHERE id=?", (bid,))
        return _record(row) if row else None

    async def latest_for_image(self, image: str) -> BuildRecord | None:
        row = await self.db.fetchone(
            "SELECT * FROM builds WHERE image=? ORDER BY attempt DESC LIMIT 1", (image,)
        )
        return _record(row) if row else None

    async def latest_for_sha(self, owner: str, repo: str, sha: str) -> BuildRecord | None:
        row = await self.db.fetchone_now(  # builds_by_repo_nocase: a point read, on every launch
            "SELECT * FROM builds WHERE owner=? COLLATE NOCASE AND repo=? COLLATE NOCASE AND sha=?"
            " ORDER BY created_at DESC, attempt DESC LIMIT 1",
            (owner, repo, sha),
        )
        return _record(row) if row else None

    async def has_key_sha(self, key: str, sha: str) -> bool:
        """Whether any record (whatever its state) was made for this branch/PR key at this sha."""
        row = await self.db.fetchone("SELECT 1 FROM builds WHERE supersede_key=? AND sha=? LIMIT 1", (key, sha))
        return row is not None

    async def active_for_key(self, key: str) -> list[BuildRecord]:
        rows = await self.db.fetchall(
            "SELECT * FROM builds WHERE supersede_key=? AND state IN ('queued','running') ORDER BY created_at",
            (key,),
        )
        return [_record(r) for r in rows]

    async def in_state(self, *states: BuildState) -> list[BuildRecord]:
        marks = ",".join("?" for _ in states)
        rows = await self.db.fetchall(
            f"SELECT * FROM builds WHERE state IN ({marks}) ORDER BY created_at, rowid",
            tuple(s.value for s in states),
        )
        return [_record(r) for r in rows]

    async def newest_built(self, owner: str, repo: str, branch: str | None = None) -> BuildRecord | None:
        """The newest built image of a repo (on ``branch`` if given): the --cache-from source."""
        if branch is None:
            rows = await self.db.fetchall(
                "SELECT * FROM builds WHERE owner=? COLLATE NOCASE AND repo=? COLLATE NOCASE AND state='built'"
                " ORDER BY finished_at DESC LIMIT 1", (owner, repo))
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM builds WHERE owner=? COLLATE NOCASE AND repo=? COLLATE NOCASE AND state='built'"
                " AND supersede_key=? ORDER BY finished_at DESC LIMIT 1",
                (owner, repo, f"{owner}/{repo}".lower() + f"#branch/{branch}"))
        return _record(rows[0]) if rows else None

    async def last_started_by_installation(self) -> list[tuple[int | None, str, float]]:
        """(installation id, owner, newest started_at) per installation and owner: when each
        last got a build slot, so the queue's turns survive a restart (one scan, at start)."""
        rows = await self.db.fetchall(
            "SELECT json_extract(request, '$.installation_id') AS inst, lower(owner) AS owner,"
            " MAX(started_at) AS at FROM builds WHERE started_at IS NOT NULL GROUP BY inst, lower(owner)")
        return [(r["inst"], r["owner"], r["at"]) for r in rows]

    @staticmethod
    def _set_clause(fields: dict[str, Any]) -> tuple[str, list[Any]]:
        cols, vals = [], []
        for k, v in fields.items():
            if isinstance(v, (BuildState, Phase)):
                v = v.value
            elif k == "log_tail":
                v = json.dumps(list(v))
            elif isinstance(v, bool):
                v = int(v)
            cols.append(f"{k}=?")
            vals.append(v)
        return ", ".join(cols), vals

    async def update(self, bid: str, **fields: Any) -> None:
        """Set columns; enums are stored by value, log_tail as JSON."""
        if not fields:
            return
        clause, vals = self._set_clause(fields)
        try:
            await self.db.execute(f"UPDATE builds SET {clause} WHERE id=?", [*vals, bid])
        finally:
            self._written()

    async def created_since(self, since: float, limit: int) -> list[BuildRecord]:
        """Records created since ``since``, oldest first: the newest ``limit`` of them."""
        rows = await self.db.fetchall(
            "SELECT * FROM (SELECT * FROM builds WHERE created_at >= ? ORDER BY created_at DESC, rowid DESC LIMIT ?)"
            " ORDER BY created_at, attempt", (since, limit))
        return [_record(r) for r in rows]

    async def recent(self, limit: int = 20) -> list[BuildRecord]:
        rows = await self.db.fetchall("SELECT * FROM builds ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_record(r) for r in rows]

    async def active_for_job(self, job_id: str) -> list[BuildRecord]:
        """The job's queued or running records, oldest first (cached until the next write)."""
        generation = self.generation  # taken before the read: a write during it makes the result stale
        hit = self._active_by_job.get(job_id)
        if hit is not None and hit[0] == generation:
            return list(hit[1])
        rows = await self.db.fetchall(
            "SELECT * FROM builds WHERE job_id=? AND state IN ('queued','running') ORDER BY created_at", (job_id,))
        records = tuple(_record(r) for r in rows)
        self._active_by_job[job_id] = (generation, records)
        return list(records)

    async def active_for_image(self, image: str) -> list[BuildRecord]:
        rows = await self.db.fetchall(
            "SELECT * FROM builds WHERE image=? AND state IN ('queued','running') ORDER BY created_at", (image,))
        return [_record(r) for r in rows]

    async def update_job(self, job_id: str, **fields: Any) -> None:
        """Set columns on every active record of one job, in one statement."""
        if not fields:
            return
        clause, vals = self._set_clause(fields)
        try:
            await self.db.execute(
                f"UPDATE builds SET {clause} WHERE job_id=? AND state IN ('queued','running')", [*vals, job_id])
        finally:
            self._written()
