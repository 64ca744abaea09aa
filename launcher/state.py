"""What the launch routes use, made once per app by launcher.setup.attach."""
from __future__ import annotations

import dataclasses
from typing import Any

import jinja2

from launcher.launches import LaunchManager
from launcher.quotas import RateLimiter, ServerCounter
from launcher.resolve import Resolver


@dataclasses.dataclass
class LauncherState:
    """What the launch routes use; kept in ``Services.launcher``."""

    resolver: Resolver
    limiter: RateLimiter
    counter: ServerCounter | None
    launches: LaunchManager
    templates: jinja2.Environment
    options: dict[str, Any]
