"""The app factory: builds one aiohttp Application holding both flows.

Nothing happens at import; ``create_app(settings)`` wires the store, the one
ClientSession, the GitHub App client, the builder, the scheduler, the
dispatcher and every route, and ``on_cleanup`` closes them again.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from bot.appkeys import SERVICES
from bot.config import Settings
from bot.events import EventBus
from bot.metrics import Metrics
from bot.services import Services
from bot.store.schema import open_store
from bot.store.builds import BuildStore
from bot.store.deliveries import DeliveryStore
from bot.store.github_state import GitHubState

log = logging.getLogger(__name__)


def build_router():  # -> gidgethub.routing.Router
    """The one place where every feature module's Router is merged."""
    from gidgethub.routing import Router

    from bot.feedback import commands as feedback_commands
    from bot.github import installations, repositories
    from bot.prebuild import handlers as prebuild_handlers
    from bot.prebuild import heads as prebuild_heads

    return Router(installations.router, repositories.router, prebuild_heads.router, prebuild_handlers.router, feedback_commands.router)


def make_builder(services: Services):
    s = services.settings
    if s.builder == "kubernetes":
        from bot.builders.kubernetes import KubernetesBuilder

        return KubernetesBuilder(s, services.metrics)
    from bot.builders.local import LocalBuilder

    return LocalBuilder(s)


def make_image_lookup(services: Services):
    s = services.settings
    if s.registry_url:
        from bot.registry import RegistryClient

        return RegistryClient(services.session, s.registry_url, docker_config=s.docker_config)
    from bot.builders.local_images import LocalImages

    return LocalImages(s.container_engine)


Factory = Callable[[Services], Any]


def create_app(settings: Settings, *, start_workers: bool = True, builder: Factory | None = None,
               images: Factory | None = None, recovery: Any = None) -> web.Application:
    """The service. ``builder`` and ``images`` replace the configured backends (tests, embedding);
    ``recovery`` (a bot.recovery.service.Timing) paces redelivery and reconcile (tests)."""
    app = web.Application(client_max_size=25 * 1024 * 1024 + 1)
    # Objects that need a running loop (session, db) are made in the cleanup context.
    app.cleanup_ctx.append(_lifecycle(settings, start_workers, builder or make_builder, images or make_image_lookup,
                                      recovery))

    from bot.web import health, pages
    from bot.webhooks import receiver
    from launcher import api as launcher_api
    from launcher import build_page, cors
    from launcher import routes as launcher_routes

    receiver.setup(app)
    health.setup(app)
    pages.setup(app)
    launcher_routes.setup(app)
    build_page.setup(app)
    launcher_api.setup(app)
    cors.setup(app)
    return app


def _lifecycle(settings: Settings, start_workers: bool, builder: Factory, images: Factory, recovery: Any = None):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        db = await open_store(settings.db_path)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60, connect=10),
            headers={"User-Agent": "binder-prebuild"},
        )
        services = Services(
            settings=settings, db=db, session=session, deliveries=DeliveryStore(db), builds=BuildStore(db),
            gh_state=GitHubState(db), bus=EventBus(), metrics=Metrics(),
        )
        app[SERVICES] = services
        try:
            await _start(services, start_workers, builder, images, recovery)
            yield
        finally:
            await _stop(services)
            await session.close()
            await db.close()

    return ctx


async def _start(services: Services, start_workers: bool, builder: Factory, images: Factory,
                 recovery: Any = None) -> None:
    from bot.github.client import GitHubApp
    from bot.scheduler import Scheduler
    from bot.webhooks.dispatcher import Dispatcher

    s = services.settings
    if s.has_app_credentials:
        services.github = GitHubApp(services.session, s, metrics=services.metrics)
        await services.github.identity.prepare()
    services.images = images(services)
    from bot.web.health import add_check
    add_check(services, "registry" if s.registry_url else "local images", services.images.health)
    services.builder = builder(services)
    add_check(services, "builder", services.builder.health)
    services.scheduler = Scheduler(services)
    from bot.feedback.reporter import attach as attach_feedback
    services.feedback = attach_feedback(services)
    from launcher.setup import attach as attach_launcher
    await attach_launcher(services)
    if s.prepull_enabled:
        from bot.prepull import Prepuller
        prepuller = Prepuller(services)
        services.prepull = prepuller
        add_check(services, "image puller", prepuller.health)
    if start_workers:
        await services.builder.start()
        if services.prepull is not None:
            await services.prepull.start()
        await services.scheduler.start()
        from bot.feedback.restore import restore as restore_feedback
        await restore_feedback(services.feedback)  # what a stop left unsaid on GitHub, from the store
        dispatcher = Dispatcher(services, build_router())
        services.dispatcher = dispatcher
        await dispatcher.start()
        from bot.github.installations import refresh_installations_soon
        refresh_installations_soon(services)
        from bot.recovery.service import start_recovery
        services.recovery = start_recovery(services, recovery)  # redeliver what GitHub could not deliver, reconcile heads


async def _stop(services: Services) -> None:
    from bot.github.installations import stop_refresh
    from bot.recovery.service import stop_recovery

    recovery, services.recovery = services.recovery, None
    await stop_recovery(recovery)
    await stop_refresh(services)  # the background installations refresh (may have been started by setup too)
    dispatcher = services.dispatcher
    if dispatcher is not None:
        await dispatcher.stop()
    if services.scheduler is not None:
        await services.scheduler.stop()
    feedback = services.feedback
    if feedback is not None:  # flush pending check run/comment updates, then stop its workers
        await feedback.shutdown()
    prepuller = services.prepull
    if prepuller is not None:
        await prepuller.close()
    if services.builder is not None:
        await services.builder.close()
    if services.images is not None:
        await services.images.close()
    if services.hub is not None:
        await services.hub.close()
