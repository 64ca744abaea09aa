"""``binder-prebuild build OWNER/REPO [--ref REF]``: one prebuild from the command line.

It goes through the same scheduler, builder and image lookup as the service,
with its own store in DATA_DIR, and prints progress as it comes.
"""
from __future__ import annotations

import asyncio
import re
import sys

import aiohttp

from bot.app import make_builder, make_image_lookup
from bot.config import Settings
from bot.events import EventBus
from bot.git_remote import Outcome, ls_remote
from bot.metrics import Metrics
from bot.model import BuildRequest, BuildState, ProgressEvent, Trigger
from bot.scheduler import Scheduler
from bot.services import Services
from bot.store.schema import open_store
from bot.store.builds import BuildRecord, BuildStore
from bot.store.deliveries import DeliveryStore
from bot.store.github_state import GitHubState

_SHA = re.compile(r"^[0-9a-f]{40}$")


async def resolve_ref(clone_url: str, ref: str | None) -> tuple[str, str | None, str | None]:
    """(sha, branch, default branch) via ``git ls-remote``: works for any host git can reach."""
    head = await ls_remote(clone_url, "HEAD", timeout=60)
    if head.outcome in (Outcome.NO_REPO, Outcome.UNREACHABLE):
        raise SystemExit(f"binder-prebuild: cannot read {clone_url}: {head.detail}")
    default = head.default_branch
    if ref is None or ref == "HEAD":
        if head.sha is None:
            raise SystemExit(f"binder-prebuild: {clone_url} has no HEAD")
        return head.sha, default, default
    if _SHA.match(ref.lower()):
        return ref.lower(), None, default
    answer = await ls_remote(clone_url, ref, timeout=60)
    if answer.sha is None:
        raise SystemExit(f"binder-prebuild: no branch or tag {ref!r} in {clone_url}"
                         + (f" ({answer.detail})" if answer.detail else ""))
    return answer.sha, answer.branch, default


async def run_one_build(settings: Settings, owner: str, repo: str, ref: str | None,
                        clone_url: str | None, rebuild: bool) -> int:
    url = clone_url or f"https://github.com/{owner}/{repo}"
    sha, branch, default = await resolve_ref(url, ref)
    db = await open_store(settings.db_path)
    session = aiohttp.ClientSession()
    services = Services(settings=settings, db=db, session=session, deliveries=DeliveryStore(db),
                        builds=BuildStore(db), gh_state=GitHubState(db), bus=EventBus())
    services.metrics = Metrics()
    services.images = make_image_lookup(services)
    services.builder = make_builder(services)
    services.scheduler = Scheduler(services)
    done: asyncio.Future[BuildRecord] = asyncio.get_running_loop().create_future()

    async def show(record: BuildRecord, event: ProgressEvent) -> None:
        text = event.message.rstrip()
        print(f"[{event.phase.value:>9}] {text}" if text else f"[{event.phase.value:>9}]", flush=True)
        if record.state.finished and event.phase.terminal_for_build and not done.done():
            done.set_result(record)

    services.bus.add_listener(show)
    try:
        await services.builder.start()
        await services.scheduler.start()
        req = BuildRequest(owner=owner, repo=repo, sha=sha, clone_url=url, branch=branch,
                           default_branch=default, trigger=Trigger.CLI)
        print(f"building {owner}/{repo} at {sha} as {services.scheduler.image_for(owner, repo, sha)}", flush=True)
        record = await services.scheduler.submit(req, rebuild=rebuild)
        if not record.state.finished:
            record = await done
        else:
            record = await services.builds.get(record.id) or record
        print(f"{record.state.value}: {record.image}" + (f" ({record.reason})" if record.reason else ""),
              file=sys.stderr if record.state != BuildState.BUILT else sys.stdout)
        return 0 if record.state == BuildState.BUILT else 1
    finally:
        await services.scheduler.stop()
        await services.builder.close()
        await services.images.close()
        await session.close()
        await db.close()
