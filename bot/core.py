"""The lower half of the service objects: what the long-lived components may use.

``Services`` (bot/services.py) adds the components themselves (scheduler,
feedback reporter, dispatcher, launcher) on top of this. A component takes a
``Core``, never a ``Services``, so the import graph runs one way: the flows
(handlers, routes) import ``Services``; ``Services`` imports the components;
the components import ``Core`` and the store and clients below it.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import cachetools

from bot.config import Settings
from bot.events import EventBus
from bot.metrics import Metrics
from bot.store import Database
from bot.store.builds import BuildStore
from bot.store.deliveries import DeliveryStore
from bot.store.github_state import GitHubState
from bot.webhooks.ingest import IngestGauge

if TYPE_CHECKING:
    from bot.builders.base import Builder, ImageLookup
    from bot.github.client import GitHubApp
    from bot.webhooks.writer import DeliveryWriter
    from launcher.hub import HubClient

# A dependency's health check answers (ok, detail); see bot/web/health.py.
HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]

REPO_CACHE_SIZE = 4096
REPO_CACHE_TTL = 6 * 3600  # a file or commit at a sha never changes; the bound is for memory


def _sha_cache() -> cachetools.TTLCache:
    return cachetools.TTLCache(maxsize=REPO_CACHE_SIZE, ttl=REPO_CACHE_TTL)


@dataclasses.dataclass
class Core:
    settings: Settings
    db: Database
    session: aiohttp.ClientSession
    deliveries: DeliveryStore
    builds: BuildStore
    gh_state: GitHubState
    bus: EventBus
    metrics: Metrics | None = None
    github: "GitHubApp | None" = None
    images: "ImageLookup | None" = None
    builder: "Builder | None" = None
    hub: "HubClient | None" = None
    # /health: the registered dependency checks and their recent answers
    health_checks: list[tuple[str, HealthCheck]] = dataclasses.field(default_factory=list)
    health_cache: cachetools.TTLCache | None = None
    # webhook intake: the receiver's group-commit writer, how busy it is, and the
    # event it sets after storing a delivery so the dispatcher wakes at once
    delivery_writer: "DeliveryWriter | None" = None
    ingest: IngestGauge = dataclasses.field(default_factory=IngestGauge)
    delivery_wakeup: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # per-app caches (not module globals, so two apps in one process never share answers)
    repo_configs: cachetools.TTLCache = dataclasses.field(default_factory=_sha_cache)
    commit_messages: cachetools.TTLCache = dataclasses.field(default_factory=_sha_cache)
