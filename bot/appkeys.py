"""Typed keys for what the aiohttp Application holds."""
from __future__ import annotations

from aiohttp import web

from bot.services import Services

SERVICES = web.AppKey("services", Services)
