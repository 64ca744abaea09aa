"""Shared pytest fixtures: one module per remote or component in tests/fixtures/, all exposed here.

Fixtures find each other by name, so a module may use another's fixtures without importing it.
"""
from __future__ import annotations

from tests.fixtures.registry import *  # noqa: F401,F403
from tests.fixtures.github import *  # noqa: F401,F403
from tests.fixtures.webhooks import *  # noqa: F401,F403
from tests.fixtures.kubernetes import *  # noqa: F401,F403
from tests.fixtures.launcher import *  # noqa: F401,F403
from tests.fixtures.feedback import *  # noqa: F401,F403
from tests.fixtures.local_engine import *  # noqa: F401,F403
from tests.fixtures.local_builder import *  # noqa: F401,F403
