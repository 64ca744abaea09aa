"""Launches in progress: image ready -> start it; build running -> attach; missing -> build.

One ``Launch`` (launcher/launch.py) per (browser, image), so a client that reconnects or
reloads follows the same launch instead of starting a second build or a second server.
Each launch runs as a task of its own, independent of any connection.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from bot.images import image_repository
from bot.model import BuildRequest, BuildState, Phase, Trigger
from launcher.hub import HubError, HubNotFound, HubUnavailable
from launcher.guard import QuotaRefused
from launcher.resolve import GitHubDown, NotServed, RefNotFound, Resolver
from launcher.launch import Launch, LaunchTarget, Outcome
from launcher.spec import RepoSpec, new_launch_token, server_url, username_for
from launcher.visibility import require_visible

if TYPE_CHECKING:
    from bot.core import Core
    from bot.scheduler import Scheduler
    from bot.store.builds import BuildRecord
    from launcher.quotas import ServerCounter
    from launcher.spare_users import SpareUsers

log = logging.getLogger(__name__)

# The request checked the repository's visibility just before it created the launch; a server
# started later than this (after a build) checks it again, a prebuilt image's launch does not
# read the same facts twice within a millisecond.
VISIBILITY_RECHECK_AFTER = 1.0
AFTER_READY = 0.05  # seconds: what a launch sets off waits until its ready event has been written


def _progress_for(phase: Phase) -> float:
    """Where the page's bar stands in each phase (0..1)."""
    return {
        Phase.WAITING: 0.05, Phase.FETCHING: 0.15, Phase.BUILDING: 0.3, Phase.PUSHING: 0.7,
        Phase.BUILT: 0.8, Phase.LAUNCHING: 0.85, Phase.READY: 1.0,
    }.get(phase, 0.0)


class LaunchManager:
    def __init__(self, services: "Core", scheduler: "Scheduler", resolver: Resolver,
                 counter: "ServerCounter | None", *, spares: "SpareUsers | None" = None,
                 keepalive: float = 15.0, keep_ready: float = 120.0, keep_failed: float = 60.0,
                 reserve_ttl: float = 600.0, status_poll: float = 30.0) -> None:
        self.services = services
        self.scheduler = scheduler
        self.resolver = resolver
        self.counter = counter
        self.spares = spares
        self.keepalive = keepalive
        self.keep_ready = keep_ready
        self.keep_failed = keep_failed
        self.reserve_ttl = reserve_ttl
        self.status_poll = status_poll
        self._by_id: dict[str, Launch] = {}
        self._by_client: dict[tuple[str, str], str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._deferred: set[asyncio.TimerHandle] = set()

    # -- bookkeeping ------------------------------------------------------------
    def get(self, launch_id: str | None) -> Launch | None:
        return self._by_id.get(launch_id or "")

    def for_client(self, client: str | None, image: str) -> Launch | None:
        """This browser's launch of this image: in progress, or ready a moment ago (not failed ones)."""
        if not client:
            return None
        launch = self.get(self._by_client.get((client, image)))
        if launch is None or launch.outcome not in (None, Outcome.READY):
            return None
        return launch

    def create(self, target: LaunchTarget, client: str | None) -> Launch:
        launch = Launch(secrets.token_urlsafe(12), target, client)
        self._by_id[launch.id] = launch
        if client:
            self._by_client[(client, target.image)] = launch.id
        self._expire_later(launch, self.reserve_ttl, only_unstarted=True)
        return launch

    def _expire_later(self, launch: Launch, delay: float, only_unstarted: bool = False) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(launch.id, None)
        if old is not None:
            old.cancel()

        def expire() -> None:
            self._timers.pop(launch.id, None)
            if only_unstarted and launch.started:
                return
            self._by_id.pop(launch.id, None)
            key = (launch.client or "", launch.target.image)
            if self._by_client.get(key) == launch.id:
                del self._by_client[key]

        self._timers[launch.id] = loop.call_later(delay, expire)

    def start(self, launch: Launch) -> None:
        """Run the launch (once, whoever asks first)."""
        if launch.task is None:
            launch.task = asyncio.create_task(self._run(launch), name=f"launch-{launch.id}")

    def in_progress(self) -> int:
        return sum(1 for launch in self._by_id.values() if launch.started and not launch.finished)

    async def close(self) -> None:
        for handle in [*self._timers.values(), *self._deferred]:
            handle.cancel()
        tasks = [launch.task for launch in self._by_id.values() if launch.task and not launch.task.done()]
        tasks += list(self._cleanups)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.spares is not None:
            await self.spares.close()

    # -- the launch -------------------------------------------------------------
    def _finish(self, launch: Launch, outcome: Outcome) -> None:
        launch.outcome = outcome
        metrics = self.services.metrics
        if metrics is not None:
            metrics.launches.labels(outcome=outcome.value).inc()
            if outcome is Outcome.READY:
                metrics.launch_duration.observe(time.monotonic() - launch.created)
        self._expire_later(launch, self.keep_ready if outcome is Outcome.READY else self.keep_failed)

    async def _run(self, launch: Launch) -> None:
        t = launch.target
        log.info("launch %s: %s@%s (%s)", launch.id, t.spec.full_name, t.sha[:12], t.image)
        try:
            record = await self._wait_for_image(launch)
            if record is None:
                return
            if t.build_only:
                self._finish(launch, Outcome.BUILT)
                return
            await self._start_server(launch, record)
        except asyncio.CancelledError:
            if not launch.finished:
                launch.emit(Phase.CANCELLED, "The service is shutting down; please try again in a moment.")
                self._finish(launch, Outcome.CANCELLED)
            raise
        except (NotServed, RefNotFound, GitHubDown, QuotaRefused) as e:
            launch.emit(Phase.FAILED, str(e))
            self._finish(launch, Outcome.ERROR)
        except Exception:
            log.exception("launch %s: failed unexpectedly", launch.id)
            launch.emit(Phase.FAILED, "The launch failed because of an internal error; please try again.")
            self._finish(launch, Outcome.ERROR)
        finally:
            if not launch.finished:  # every path above finishes; this guards against a missed one
                self._finish(launch, Outcome.ERROR)

    async def _build_request(self, launch: Launch, *, to_build: bool = True) -> BuildRequest:
        t = launch.target
        repo = t.repo or await self.resolver.repo(t.spec, t.access)
        await require_visible(self.resolver, t.spec, t.access)
        if to_build:
            await self.resolver.verify_commit(t.spec, t.access, t.sha)  # a made-up sha builds nothing
        return BuildRequest(
            owner=t.spec.owner, repo=t.spec.repo, sha=t.sha, clone_url=repo.clone_url,
            installation_id=t.access.installation_id, private=repo.private,
            default_branch=repo.default_branch, trigger=Trigger.LAUNCH)

    async def _lift(self, launch: Launch, queued: "BuildRecord") -> "BuildRecord":
        """A queued build someone now waits for moves up to launch priority (a launch record joins it).

        Built from the stored request (no GitHub call); one launch record per commit, whoever clicks."""
        t = launch.target
        await require_visible(self.resolver, t.spec, t.access)  # now, not as the queued request says
        scheduler = self.services.scheduler
        assert scheduler is not None
        req = dataclasses.replace(queued.request, trigger=Trigger.LAUNCH, branch=None, pr_number=None,
                                  delivery_id=None)
        return await scheduler.submit(req)

    def _built(self, launch: Launch, record: "BuildRecord | None", message: str) -> None:
        if launch.target.build_only:
            # BinderHub ends a build-only request with "ready" (and no server): "Done! ..."
            launch.emit(Phase.READY, f"Done! {message}", imageName=launch.target.image, progress=1.0)
            return
        launch.emit(Phase.BUILT, message, imageName=launch.target.image, progress=_progress_for(Phase.BUILT))

    async def _wait_for_image(self, launch: Launch) -> "BuildRecord | None":
        """Follow (or start) the image's build; the record that says it is built, or None (failed)."""
        services = self.services
        t = launch.target
        scheduler = self.scheduler
        async with services.bus.subscribe(t.image) as queue:
            record = await scheduler.status(t.spec.owner, t.spec.repo, t.sha)
            submitted = False
            if record is not None and record.state is BuildState.BUILT:
                self._built(launch, record, "The image is prebuilt.")
                return record
            if record is None or record.state.finished:
                if not services.settings.build_on_launch:
                    if (await scheduler.image_status(t.spec.owner, t.spec.repo, t.sha)).built:
                        self._built(launch, None, "The image is in the registry.")
                        return record or _NO_RECORD
                    launch.emit(Phase.FAILED, _not_prebuilt(t.spec))
                    self._finish(launch, Outcome.NOT_BUILT)
                    return None
                record = await scheduler.submit(await self._build_request(launch))
                submitted = True
                if record.state is BuildState.BUILT:
                    self._built(launch, record, "The image is in the registry.")
                    return record
                launch.emit(record.phase, "Building the image: this repository's environment was not prebuilt "
                            "for this commit yet.", progress=_progress_for(record.phase))
            elif record.state is BuildState.QUEUED:
                record = await self._lift(launch, record)
                if record.state is BuildState.BUILT:  # it finished in the meantime
                    self._built(launch, record, "The image is built.")
                    return record
                note = scheduler.waiting_message(record.job_id)
                launch.emit(record.phase, "A build of this commit is queued; following it."
                            + (f" {note}" if note else ""), progress=_progress_for(record.phase))
            else:
                launch.emit(record.phase, "A build of this commit is running; following it.",
                            progress=_progress_for(record.phase))
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), self.status_poll)
                except asyncio.TimeoutError:
                    # a dropped event must not leave us waiting: the store has the outcome
                    record = await scheduler.status(t.spec.owner, t.spec.repo, t.sha)
                    if record is not None and record.state is BuildState.BUILT:
                        self._built(launch, record, "The image is built.")
                        return record
                    if record is not None and record.state in (BuildState.FAILED, BuildState.CANCELLED):
                        event_phase, message = Phase(record.state.value), record.reason or record.state.value
                    else:
                        continue
                else:
                    event_phase, message = event.phase, event.message
                    if event_phase is Phase.BUILT:
                        self._built(launch, None, message or "The image is built.")
                        return await scheduler.status(t.spec.owner, t.spec.repo, t.sha) or _NO_RECORD
                if event_phase is Phase.FAILED:
                    launch.emit(Phase.FAILED, f"The build failed: {message}" if message else "The build failed.")
                    self._finish(launch, Outcome.FAILED)
                    return None
                if event_phase is Phase.CANCELLED:
                    if services.settings.build_on_launch and not submitted:
                        # the build we followed was superseded (a newer push): build this commit ourselves
                        record = await scheduler.submit(await self._build_request(launch))
                        submitted = True
                        if record.state is BuildState.BUILT:
                            self._built(launch, record, "The image is in the registry.")
                            return record
                        launch.emit(record.phase, "The build we followed was cancelled; building this commit.")
                        continue
                    launch.emit(Phase.CANCELLED, f"The build was cancelled: {message}" if message
                                else "The build was cancelled.")
                    self._finish(launch, Outcome.CANCELLED)
                    return None
                launch.emit(event_phase, message, progress=_progress_for(event_phase))

    def _user_options(self, launch: Launch, record: "BuildRecord", token: str, repo_url: str) -> dict[str, Any]:
        t = launch.target
        html = repo_url.removesuffix(".git")
        if t.repo is not None:
            html = t.repo.html_url
        return {
            "image": t.image,
            "token": token,
            "repo_url": repo_url,
            "ref": t.sha,
            "binder_ref_url": f"{html}/tree/{t.sha}",
            "binder_launch_host": t.launch_host,
            "binder_request": t.spec.request_path,
            "binder_persistent_request": t.spec.persistent_path(t.sha),
        }

    async def _start_server(self, launch: Launch, record: "BuildRecord") -> None:
        services = self.services
        t = launch.target
        hub = services.hub
        if hub is None:
            launch.emit(Phase.FAILED, "This service has no JupyterHub configured (JUPYTERHUB_API_URL), "
                                      "so it cannot start servers.")
            self._finish(launch, Outcome.HUB_DOWN)
            return
        if record is _NO_RECORD or record is None:
            request = await self._build_request(launch, to_build=False)  # its image exists: only the URLs
            repo_url = request.clone_url
        else:
            repo_url = record.request.clone_url
            if time.monotonic() - launch.created > VISIBILITY_RECHECK_AFTER:
                # now, not as the record says: the launch waited (a build) since its request checked it
                await require_visible(self.resolver, t.spec, t.access)
        spare = self.spares.take(t.spec.full_name) if self.spares is not None else None
        user = spare.name if spare is not None else username_for(t.spec.owner, t.spec.repo)
        timeout = services.settings.launch_timeout
        launch.emit(Phase.LAUNCHING, "Launching a server for you.", progress=_progress_for(Phase.LAUNCHING))
        created = False  # a Hub user this launch made or took: deleted unless the launch ends ready
        admitted = False
        try:
            s = services.settings
            if self.counter is not None and (s.max_servers >= 0 or s.max_servers_per_repo >= 0):
                refusal = await self.counter.admit(
                    user, image_repository(t.image), s.max_servers, s.max_servers_per_repo, t.spec.full_name)
                if refusal is not None:
                    launch.emit(Phase.FAILED, refusal.message, limit=refusal.limit.value,
                                retryAfter=refusal.retry_after)
                    self._finish(launch, Outcome.QUOTA)
                    return
                admitted = True
            token = new_launch_token()
            async with asyncio.timeout(timeout):
                if spare is None:
                    await hub.create_user(user)
                created = True  # a spare's user exists already: taken before any await
                options = self._user_options(launch, record, token, repo_url)
                try:
                    started = await hub.start_server(user, options)
                except HubNotFound:
                    if spare is None:
                        raise
                    log.info("launch %s: spare user %s is gone (the idle culler?); making it again", launch.id, user)
                    await hub.create_user(user)
                    started = await hub.start_server(user, options)
                self._after_ready(lambda: self._background(  # e.g. the image puller's launch log
                    services.bus.launched(t.spec.owner, t.spec.repo, t.image), f"launched-{launch.id}"))
                if started == "pending":  # 202: still spawning ("started", 201, and "running" mean up and routed)
                    await self._follow_spawn(launch, user, timeout)
            url = server_url(hub.public_url, user)
            log.info("launch %s: server of %s is ready", launch.id, user)
            launch.emit(Phase.READY, f"server running at {url}", **ready_fields(url, options), progress=1.0)
            self._finish(launch, Outcome.READY)
        except TimeoutError:
            log.warning("launch %s: server of %s not ready after %s s", launch.id, user, timeout)
            launch.emit(Phase.FAILED, f"The server did not start within {timeout} seconds, so the launch "
                                      "was given up. Please try again later.")
            self._finish(launch, Outcome.TIMEOUT)
        except HubUnavailable as e:
            log.warning("launch %s: hub unavailable: %s", launch.id, e.message)
            launch.emit(Phase.FAILED, f"JupyterHub is not reachable right now ({e.message}). "
                                      "Please try again in a few minutes.")
            self._finish(launch, Outcome.HUB_DOWN)
        except HubError as e:
            log.warning("launch %s: hub refused: %s %s", launch.id, e.status, e.message)
            launch.emit(Phase.FAILED, f"JupyterHub could not start the server: {e.message}")
            self._finish(launch, Outcome.FAILED)
        finally:
            if admitted and self.counter is not None:
                self.counter.release(user, running=launch.outcome is Outcome.READY)
            if spare is not None and not created:  # refused or failed before using it: the next launch may
                self.spares.give_back(spare)  # type: ignore[union-attr]
            if self.spares is not None and launch.outcome is Outcome.READY:
                spares = self.spares  # the next launch's user, once this one's ready is out
                self._after_ready(lambda: spares.refill(t.spec.owner, t.spec.repo))
            if created and launch.outcome is not Outcome.READY:
                self._cleanup_user(user)

    async def _follow_spawn(self, launch: Launch, user: str, timeout: float) -> None:
        """A spawn the Hub still reports as pending (202): relay its progress until the server is ready."""
        hub = self.services.hub
        assert hub is not None
        async with contextlib.aclosing(hub.progress(user, timeout=timeout)) as events:
            async for event in events:
                if event.get("failed"):
                    raise HubError(500, str(event.get("message") or "the server failed to start"))
                if event.get("ready"):
                    return
                if event.get("message"):
                    hub_progress = event.get("progress")
                    frac = None
                    if isinstance(hub_progress, (int, float)):
                        frac = 0.85 + 0.15 * max(0.0, min(100.0, float(hub_progress))) / 100
                    launch.emit(Phase.LAUNCHING, str(event["message"]), progress=frac)

    def _after_ready(self, start: Callable[[], None]) -> None:
        """Start ``start`` a moment later: work a launch sets off (listeners, a spare user) would
        otherwise run on the loop between the ``ready`` event and its stream's write."""
        handle: asyncio.TimerHandle | None = None

        def run() -> None:
            self._deferred.discard(handle)  # type: ignore[arg-type]
            start()

        handle = asyncio.get_running_loop().call_later(AFTER_READY, run)
        self._deferred.add(handle)

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Work the launch does not wait for (cancelled on close), e.g. launch listeners' bookkeeping."""
        task = asyncio.create_task(work, name=name)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _cleanup_user(self, user: str) -> None:
        """Stop and delete a user whose launch failed (in the background)."""
        hub = self.services.hub

        async def delete() -> None:
            try:
                await hub.delete_user(user)
            except Exception as e:  # the culler removes it later
                log.warning("could not delete hub user %s after a failed launch: %s", user, e)

        if self.counter is not None:
            self.counter.stopped(user)
        self._background(delete(), f"delete-{user}")


def ready_fields(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """BinderHub's ``ready`` message: the server's base URL (absolute, ends in ``/``, no query),
    its token apart, and what the server was started with (``image``, ``repo_url``, ``binder_*``)."""
    out: dict[str, Any] = {"url": url}
    for key in ("image", "repo_url", "token", "binder_ref_url", "binder_launch_host", "binder_request",
                "binder_persistent_request"):
        if key in options:
            out[key] = options[key]
    return out


class _NoRecord:
    """The image exists (found in the registry) but no build record of ours describes it."""


_NO_RECORD: Any = _NoRecord()


def _not_prebuilt(spec: RepoSpec) -> str:
    return (f"{spec.full_name} at {spec.ref} has not been prebuilt, and this service does not build on "
            "launch (BUILD_ON_LAUNCH is off). Push to the repository (or wait for its build) and try again.")
