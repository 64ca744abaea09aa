"""The service objects one running app holds; handlers receive them as ``services``."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.config import Settings
from bot.events import EventBus
from bot.store import Database
from bot.store.builds import BuildStore
from bot.store.deliveries import DeliveryStore
from bot.store.github_state import GitHubState

if TYPE_CHECKING:
    from bot.builders.base import Builder, ImageLookup
    from bot.github.client import GitHubApp
    from bot.scheduler import Scheduler


@dataclasses.dataclass
class Services:
    settings: Settings
    db: Database
    session: aiohttp.ClientSession
    deliveries: DeliveryStore
    builds: BuildStore
    gh_state: GitHubState
    bus: EventBus
    github: "GitHubApp | None" = None
    images: "ImageLookup | None" = None
    builder: "Builder | None" = None
    scheduler: "Scheduler | None" = None
    hub: Any = None  # launcher.hub.HubClient
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
