"""The service objects one running app holds; handlers receive them as ``services``.

``Core`` (bot/core.py) is what the long-lived components use; ``Services`` adds
those components. The components take a ``Core``, so nothing they import
reaches back up here: the flows (handlers, routes, commands) import ``Services``,
and it imports the components.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import cachetools

from bot.core import Core

if TYPE_CHECKING:
    from bot.feedback.reporter import Reporter
    from bot.prepull import Prepuller
    from bot.scheduler import Scheduler
    from bot.webhooks.dispatcher import Dispatcher
    from launcher.state import LauncherState


@dataclasses.dataclass
class Services(Core):
    scheduler: "Scheduler | None" = None
    feedback: "Reporter | None" = None  # check runs and PR comments (bot.feedback.reporter.attach)
    launcher: "LauncherState | None" = None  # launcher.setup.attach
    dispatcher: "Dispatcher | None" = None  # made by bot/app.py when the workers start
    # bot.recovery.service.Recovery (redelivery, reconcile, store upkeep). Not typed here: it drives
    # the handlers, which import Services, so naming its type here would close an import loop.
    recovery: Any = None
    prepull: "Prepuller | None" = None  # PREPULL_ENABLED: keeps images on the nodes (bot.prepull)
    installations_refresh: "asyncio.Task[None] | None" = None  # bot.github.installations
    command_denials: cachetools.TTLCache | None = None  # bot.feedback.commands: who was told "no" lately
