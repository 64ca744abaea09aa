"""The ``binder-prebuild`` command. ``serve`` runs the service (webhooks, launcher, health).

Minimal for now (written by the webhook engineer so ``serve`` exists for the crash
test and the benchmark); the lead owns this file and may extend it.
"""
from __future__ import annotations

import argparse
import logging
import sys

from bot.config import ConfigError, load_settings
from bot.logs import settings_secrets, setup_logging

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from aiohttp import web

    from bot.app import create_app

    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as e:
        print(f"binder-prebuild: configuration error: {e}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    setup_logging(args.log_level, secrets=settings_secrets(settings))
    log.info("starting binder-prebuild on http://%s:%d (data in %s, builder %s)",
             settings.host, settings.port, settings.data_dir, settings.builder)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None,
                access_log=logging.getLogger("aiohttp.access") if args.access_log else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="binder-prebuild", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (settings from the environment; see README)")
    serve.add_argument("--host", help="listen address (default: HOST, then 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: PORT, then 8080)")
    serve.add_argument("--config", help="YAML file with settings (the environment wins)")
    serve.add_argument("--log-level", default=None, help="DEBUG, INFO (default: LOG_LEVEL or INFO), WARNING")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
