"""SIGKILL the real ``binder-prebuild serve`` while signed deliveries flow; restart; check exactly once.

The service runs as a subprocess (the console script from the venv) with a temp
DATA_DIR, a webhook secret, no App credentials, BUILDER=local and no registry.
Deliveries are events whose handlers only do store work (ping, installation,
installation_repositories, and pushes the prebuild handler ignores: a deleted
branch, a tag). Kills land in both windows that matter:
- while deliveries flow in, at a moment some delivery is stored but not yet answered
  (the process is frozen with SIGSTOP, its store read from outside, and killed when a
  request still in flight is already stored; the test asserts this happened);
- while the dispatcher works through the backlog: deliveries claimed ('processing'),
  their handlers running or finished but not yet marked done.
Unanswered deliveries are sent again after each restart, as GitHub's redelivery would.

Then, reading the SQLite store directly:
- every delivery answered 2xx is stored and completed ('done');
- every stored delivery, answered or not, has exactly one 'done' record;
- the handlers' effects are there for every answered installation delivery;
- nothing is stored that was never sent.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests import payloads

SERVE = [str(Path(sys.executable).with_name("binder-prebuild")), "serve"]
SECRET = "crash-test-secret"
KINDS = ["ping", "installation.created", "installation_repositories.added", "push.deleted", "push.tag"]
ACCEPTED = {200, 202}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """One ``binder-prebuild serve`` process on a fixed port and DATA_DIR."""

    def __init__(self, data_dir: Path, port: int, log_dir: Path, *, command: list[str] | None = None,
                 extra_env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.data_dir, self.port, self.log_dir = data_dir, port, log_dir
        self.command = command or SERVE
        self.extra_env = extra_env or {}
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GITHUB_", "REGISTRY_", "JUPYTERHUB_", "BINDER_PREBUILD_"))}
        env.update(GITHUB_WEBHOOK_SECRET=SECRET, DATA_DIR=str(self.data_dir), BUILDER="local",
                   HOST="127.0.0.1", PORT=str(self.port), LOG_LEVEL="INFO")
        env.update(self.extra_env)
        return env

    async def start(self) -> None:
        self.runs += 1
        log = open(self.log_dir / f"serve-{self.runs}.log", "wb")
        self.proc = subprocess.Popen(self.command, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.cwd)
        log.close()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log_tail()}", pytrace=False)
                try:
                    async with s.get(f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        await r.read()
                        return  # answering (200 or 503: some dependency may be missing here)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"serve did not answer within 60 s:\n{self.log_tail()}", pytrace=False)
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process stands still where it is (to look at its store from outside)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, n: int = 40) -> str:
        path = self.log_dir / f"serve-{self.runs}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


@dataclass
class Delivery:
    id: str
    kind: str
    headers: dict[str, str]
    raw: bytes
    installation_id: int | None = None
    answers: list[int | None] = field(default_factory=list)  # None: no answer (connection lost)

    @property
    def accepted(self) -> bool:
        return any(a in ACCEPTED for a in self.answers)


def make_delivery(i: int, rng: random.Random) -> Delivery:
    kind = rng.choice(KINDS)
    body = payloads.load(kind)
    inst = None
    if kind.startswith("installation"):
        inst = 7_000_000 + i  # one installation per delivery, so each one's effect can be checked
        body = payloads.rewrite(body, installation_id=inst)
    elif kind.startswith("push"):
        body = payloads.rewrite(body, repo=f"crash-org/repo{i % 11}")
    body = payloads.vary(body, i)  # distinct events have distinct bodies (a repeated body is a replay)
    headers, raw = payloads.signed(payloads.event_of(kind), body, SECRET, delivery_id=str(uuid.uuid4()))
    return Delivery(headers["X-GitHub-Delivery"], kind, headers, raw, inst)


async def send_phase(service: Service, todo: list[Delivery], *, concurrency: int,
                     kill_after: int | None, db: Path | None = None) -> None:
    """Send ``todo`` concurrently; once ``kill_after`` answers came back, SIGKILL the service
    at a moment when a delivery is stored but not yet answered (see ``kill_in_window``).

    After the kill, senders stop taking new deliveries (what was in flight gets no answer).
    """
    queue = list(reversed(todo))
    answered = 0
    killing = killed = False
    inflight: set[str] = set()
    killer: asyncio.Task[None] | None = None

    async def kill() -> None:
        nonlocal killed
        await kill_in_window(service, db, inflight)
        killed = True

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal answered, killing, killer
        while queue and not killed:
            d = queue.pop()
            inflight.add(d.id)
            try:
                async with session.post(f"{service.url}/webhooks/github", data=d.raw, headers=d.headers) as r:
                    await r.read()
                    d.answers.append(r.status)
                    answered += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                d.answers.append(None)
                continue
            finally:
                inflight.discard(d.id)
            if kill_after is not None and answered >= kill_after and not killing:
                killing = True
                killer = asyncio.create_task(kill())

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(sender(s) for _ in range(concurrency)))
    if killer is not None:
        await killer
    if kill_after is not None:
        assert killed, "the service was never killed: raise the phase size"


async def kill_in_window(service: Service, db: Path | None, inflight: set[str], tries: int = 400) -> None:
    """SIGKILL while some delivery is durably stored but its request has no answer yet.

    The window between the commit and the 202 is short, so look inside it: freeze the
    process (SIGSTOP), read the store, and kill if one of the requests still in flight is
    stored; else let it run a moment and look again. (An answer already in the socket
    buffer may still arrive after the freeze: the caller counts what really went unanswered.)
    """
    for attempt in range(tries):
        if db is None or not db.exists():
            break
        service.freeze()
        ids = list(inflight)
        stored = query(db, f"SELECT COUNT(*) FROM deliveries WHERE id IN ({','.join('?' * len(ids))})",
                       *ids)[0][0] if ids else 0
        if stored:
            break
        service.thaw()
        await asyncio.sleep(0.001 * (attempt % 5))
    service.kill()


def query(db: Path, sql: str, *args) -> list[tuple]:
    """Read the store from outside (its process may be frozen mid-write: SQLite then says "locking protocol")."""
    for attempt in range(50):
        conn = sqlite3.connect(db, timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "locking protocol" not in str(e) or attempt == 49:
                raise
        finally:
            conn.close()
        time.sleep(0.01)
    raise AssertionError("unreachable")


async def kill_while_processing(db: Path, service: Service, timeout: float = 60) -> int:
    """SIGKILL the service the moment the store shows claimed deliveries; how many it left claimed."""
    deadline = time.monotonic() + timeout
    while True:
        [(claimed,)] = query(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'processing'")
        if claimed:
            service.kill()
            break
        [(left,)] = query(db, "SELECT COUNT(*) FROM deliveries WHERE state != 'done'")
        if not left or time.monotonic() > deadline:
            pytest.fail(f"no delivery was being processed to kill ({left} left)\n{service.log_tail()}",
                        pytrace=False)
        await asyncio.sleep(0.002)
    [(interrupted,)] = query(db, "SELECT COUNT(*) FROM deliveries WHERE state = 'processing'")
    return interrupted


async def wait_until_drained(db: Path, service: Service, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        [(left,)] = query(db, "SELECT COUNT(*) FROM deliveries WHERE state != 'done'")
        if left == 0:
            return
        if time.monotonic() > deadline:
            rows = query(db, "SELECT id, event, state, attempts, error FROM deliveries WHERE state != 'done' LIMIT 5")
            pytest.fail(f"{left} deliveries not done after {timeout} s, e.g. {rows}\n{service.log_tail()}",
                        pytrace=False)
        await asyncio.sleep(0.1)


async def test_sigkill_mid_flow_then_restart_processes_every_accepted_delivery_exactly_once(tmp_path):
    if not Path(SERVE[0]).exists():
        pytest.fail(f"{SERVE[0]} missing: install the project into the venv (pip install -e .)", pytrace=False)
    rng = random.Random(20241008)
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    service = Service(data_dir, free_port(), logs)
    db = data_dir / "binder-prebuild.sqlite"
    sent: list[Delivery] = []
    counter = iter(range(10**6))

    def fresh(n: int) -> list[Delivery]:
        batch = [make_delivery(next(counter), rng) for _ in range(n)]
        sent.extend(batch)
        return batch

    def unanswered() -> list[Delivery]:
        return [d for d in sent if d.answers and d.answers[-1] is None and not d.accepted]

    stored_unanswered: set[str] = set()  # stored by the killed process, yet the sender never heard back

    def note_window() -> None:
        ids = [d.id for d in unanswered()]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            stored_unanswered.update(r[0] for r in query(
                db, f"SELECT id FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})", *chunk))

    try:
        # 1: deliveries flowing in, kill
        await service.start()
        await send_phase(service, fresh(2000), concurrency=24, kill_after=300, db=db)
        assert unanswered(), "the kill interrupted no request: nothing was tested"
        note_window()

        # 2: restart, redeliver what got no answer, send more; kill while the backlog is processed
        await service.start()
        await send_phase(service, unanswered() + fresh(1500), concurrency=24, kill_after=None)
        interrupted = await kill_while_processing(db, service)

        # 3: restart, redeliver, send more, kill while they flow in
        await service.start()
        await send_phase(service, unanswered() + fresh(1500), concurrency=24, kill_after=300, db=db)
        assert unanswered(), "the second kill during the flow interrupted no request"
        note_window()
        for _ in range(3):  # until some kill landed between a delivery's commit and its answer
            if stored_unanswered:
                break
            await service.start()
            await send_phase(service, unanswered() + fresh(800), concurrency=24, kill_after=200, db=db)
            note_window()
        assert stored_unanswered, "no kill landed between a delivery's durable write and its answer"

        # 4: restart; make sure some delivery died mid-processing, then finish without a kill
        for _ in range(3):
            if interrupted:
                break
            await service.start()
            interrupted += await kill_while_processing(db, service)
        assert interrupted, "no kill caught a delivery mid-processing: nothing was tested"
        await service.start()
        await send_phase(service, unanswered() + fresh(200), concurrency=24, kill_after=None)
        await wait_until_drained(db, service)
    finally:
        code = service.stop()
    assert code == 0, f"serve did not stop cleanly on SIGTERM ({code}):\n{service.log_tail()}"

    answered = [d for d in sent if d.accepted]
    by_id = {d.id: d for d in sent}
    non_2xx = [(d.id, a) for d in sent for a in d.answers if a is not None and a not in ACCEPTED]
    assert non_2xx == [], f"unexpected answers: {non_2xx[:5]}"

    stored = dict(query(db, "SELECT id, state FROM deliveries"))
    assert set(stored) <= set(by_id), "stored deliveries that were never sent"
    missing = [d.id for d in answered if d.id not in stored]
    assert missing == [], f"{len(missing)} deliveries answered 2xx were lost"
    assert set(stored.values()) == {"done"}
    assert stored_unanswered <= set(stored)  # and each of those was processed like any other (below)

    done_counts = dict(query(db, "SELECT delivery_id, COUNT(*) FROM delivery_attempts"
                                 " WHERE outcome='done' GROUP BY delivery_id"))
    wrong = {i: done_counts.get(i, 0) for i in stored if done_counts.get(i, 0) != 1}
    assert wrong == {}, f"deliveries not completed exactly once: {list(wrong.items())[:5]}"

    installs = {r[0] for r in query(db, "SELECT id FROM installations")}
    repos = {r[0] for r in query(db, "SELECT installation_id FROM installation_repos")}
    effects_missing = [d.id for d in answered if d.installation_id is not None
                       and (d.installation_id not in installs or d.installation_id not in repos)]
    assert effects_missing == [], f"{len(effects_missing)} answered installation deliveries left no trace"

    # what the run exercised (visible with -s; the assertions above do not depend on it)
    recorded = query(db, "SELECT COUNT(*) FROM delivery_attempts WHERE outcome='interrupted'")[0][0]
    assert recorded >= interrupted  # each restart re-queued what the kill left claimed, and said so
    print(f"\nsent {len(sent)}, answered 2xx {len(answered)}, stored {len(stored)}, "
          f"stored by a killed process before its answer {len(stored_unanswered)}, "
          f"redelivered {sum(len(d.answers) > 1 for d in sent)}, processing interrupted by a kill {recorded}")
