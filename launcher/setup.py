"""Wire the launcher into the running app: Hub client, resolver, limits, launches, health checks."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from bot.web.health import add_check
from launcher.guard import GitHubGuard
from launcher.hub import HubClient
from launcher.launches import LaunchManager
from launcher.pages import environment
from launcher.quotas import RateLimiter, ServerCounter
from launcher.resolve import Resolver
from launcher.spare_users import SPARE_TTL, SpareUsers
from launcher.state import LauncherState

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)


def make_hub(services: "Services") -> HubClient | None:
    s = services.settings
    if not s.jupyterhub_api_url:
        return None
    return HubClient(services.session, s.jupyterhub_api_url, s.jupyterhub_api_token, public_url=s.jupyterhub_url)


async def attach(services: "Services", **options: Any) -> LauncherState:
    """Create the Hub client (when JUPYTERHUB_API_URL is set) and the launcher's state.

    ``options`` tune timings for tests and benchmarks (keepalive, fresh_ttl,
    reconcile_every, head_fresh, keep_ready, status_poll, repo_ttl, negative_ttl, clock); production
    uses the defaults.
    """
    if services.hub is None:
        services.hub = make_hub(services)
    metrics = services.metrics
    s = services.settings
    clock = options.get("clock", time.monotonic)  # tests drive the caches' and limits' time
    guard = GitHubGuard(s.launch_github_calls_per_minute, s.launch_github_calls_per_hour, clock=clock)
    resolver = Resolver(services, fresh_ttl=options.get("fresh_ttl", 5.0), head_fresh=options.get("head_fresh", 60.0),
                        repo_ttl=options.get("repo_ttl", 60.0), negative_ttl=options.get("negative_ttl", 30.0),
                        repo_fresh=options.get("repo_fresh", 60.0), repo_max_age=options.get("repo_max_age", 86400.0),
                        guard=guard, clock=clock)
    counter = ServerCounter(services.hub, reconcile_every=options.get("reconcile_every", 30.0), metrics=metrics) \
        if services.hub is not None else None
    if counter is not None:
        counter.start()
    assert services.scheduler is not None  # bot/app.py makes it first
    spares = SpareUsers(services.hub, s.spare_hub_users, ttl=options.get("spare_ttl", SPARE_TTL)) \
        if services.hub is not None and s.spare_hub_users > 0 else None
    manager = LaunchManager(
        services, services.scheduler, resolver, counter, spares=spares, keepalive=options.get("keepalive", 15.0),
        keep_ready=options.get("keep_ready", 120.0), status_poll=options.get("status_poll", 30.0))
    state = LauncherState(
        resolver=resolver,
        limiter=RateLimiter(services.settings.launch_rate_per_minute),
        counter=counter,
        launches=manager,
        templates=environment(),
        options=dict(options),
    )
    if services.launcher is not None:
        await close(services.launcher)
    services.launcher = state

    if services.hub is not None:
        add_check(services, "hub", services.hub.health)
    # the registry (or local images) check is registered by bot/app.py, next to the lookup it checks
    if services.hub is None:
        log.warning("JUPYTERHUB_API_URL is not set: launches will build images but cannot start servers")
    return state


async def close(state: LauncherState) -> None:
    """Stop what the launcher runs in the background: launches, head refreshes, the count reconcile."""
    await state.launches.close()
    await state.resolver.close()
    if state.counter is not None:
        await state.counter.close()


def state_of(services: "Services") -> LauncherState:
    state = services.launcher
    if state is None:
        raise RuntimeError("launcher.setup.attach(services) has not run")
    return state
