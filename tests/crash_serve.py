"""``binder-prebuild serve`` with only the build backend stood in: the crash tests' service process.

Run as ``python -m tests.crash_serve`` with the usual settings in the environment. It is
the real ``create_app`` (receiver, store, dispatcher, scheduler, feedback, GitHub client,
the real ``RegistryClient`` on ``REGISTRY_URL``), so a SIGKILL interrupts exactly what it
would in production. Only the builder is the shared ``InstantBuilder``; it pushes by
PUTting the image's manifest to the registry (tests/fake_registry.FakeRegistry, which
lives in the test process and so, like a registry, outlives the kill).
``CRASH_BUILD_SECONDS`` is how long each build takes.
"""
from __future__ import annotations

import json
import logging
import os

import aiohttp
from aiohttp import web

from bot.app import create_app
from bot.config import load_settings
from bot.logs import settings_secrets, setup_logging
from tests.fake_builders import InstantBuilder
from tests.fake_registry import OCI_MANIFEST, manifest_url


class HttpPush:
    """What the end of ``docker push`` does to the registry: PUT the manifest under its tag."""

    def __init__(self, registry_url: str) -> None:
        self.registry_url = registry_url

    async def push(self, image: str) -> None:
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []})
        async with aiohttp.ClientSession() as session:
            async with session.put(manifest_url(self.registry_url, image), data=body,
                                   headers={"Content-Type": OCI_MANIFEST}) as r:
                r.raise_for_status()


def main() -> None:
    settings = load_settings()
    if not settings.registry_url:
        raise SystemExit("crash_serve needs REGISTRY_URL (the test's FakeRegistry)")
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"), secrets=settings_secrets(settings))
    builder = InstantBuilder(HttpPush(settings.registry_url))
    builder.build_seconds = float(os.environ.get("CRASH_BUILD_SECONDS", "0"))
    web.run_app(create_app(settings, builder=lambda services: builder), host=settings.host, port=settings.port,
                print=None, access_log=None)
    logging.shutdown()


if __name__ == "__main__":
    main()
