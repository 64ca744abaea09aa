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

# SIGTERM (Kubernetes stopping the pod): stop listening, then at most this long to finish
# answering the requests in flight; then running deliveries get 10 s (Dispatcher.stop) and
# pending check run updates 5 s (Reporter.shutdown). Build pods are left running. The
# whole stop fits SHUTDOWN_BUDGET, which k8s/'s terminationGracePeriodSeconds exceeds.
IN_FLIGHT_TIMEOUT = 10.0
SHUTDOWN_BUDGET = IN_FLIGHT_TIMEOUT + 10.0 + 5.0 + 5.0


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
                shutdown_timeout=IN_FLIGHT_TIMEOUT,
                access_log=logging.getLogger("aiohttp.access") if args.access_log else None)
    return 0


def _load(args: argparse.Namespace | None = None):
    try:
        return load_settings(config_file=getattr(args, "config", None))
    except ConfigError as e:
        print(f"binder-prebuild: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def _split_repo(text: str) -> tuple[str, str]:
    owner, _, repo = text.strip("/").partition("/")
    if not owner or not repo or "/" in repo:
        raise SystemExit(f"binder-prebuild: expected OWNER/REPO, got {text!r}")
    return owner, repo.removesuffix(".git")


def _build_pod(args: argparse.Namespace) -> int:
    from bot.builders.k8s_objects import build_pod_yaml

    owner, repo = _split_repo(args.repo)
    try:
        text = build_pod_yaml(_load(), owner, repo, args.sha)
    except ValueError as e:
        print(f"binder-prebuild: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


def _build(args: argparse.Namespace) -> int:
    import asyncio

    from bot.oneshot import run_one_build

    owner, repo = _split_repo(args.repo)
    settings = _load()
    setup_logging("WARNING", secrets=settings_secrets(settings))
    return asyncio.run(run_one_build(settings, owner, repo, args.ref, args.clone_url, args.rebuild))


def _deliveries(args: argparse.Namespace) -> int:
    """List dead deliveries, or requeue one (the running service picks it up within seconds)."""
    import asyncio
    import datetime as dt

    from bot.store import Database
    from bot.store.upkeep import dead_deliveries, requeue

    settings = _load(args)

    async def run() -> int:
        db = await Database(settings.db_path).open()
        try:
            if args.retry:
                if await requeue(db, args.retry):
                    print(f"requeued delivery {args.retry}")
                    return 0
                print(f"binder-prebuild: no dead delivery {args.retry!r}", file=sys.stderr)
                return 1
            rows = await dead_deliveries(db, limit=args.limit)
            if not rows:
                print("no dead deliveries")
            for r in rows:
                when = dt.datetime.fromtimestamp(r["finished_at"] or r["received_at"], dt.timezone.utc)
                what = " ".join(x for x in (r["event"], r["action"] or "", r["repo"] or "") if x)
                print(f"{r['id']}  {when:%Y-%m-%d %H:%M:%S}Z  {what}  attempts={r['attempts']}  {r['error'] or ''}")
            return 0
        finally:
            await db.close()

    return asyncio.run(run())


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

    up = sub.add_parser("up", help="start the embedded stack on loopback: engine, registry, JupyterHub, service")
    up.set_defaults(func=lambda a: __import__("bot.stack", fromlist=["main"]).main())
    stop = sub.add_parser("stop", help="stop what `up` started: the stack (if running), the Podman service, the registry")
    stop.set_defaults(func=lambda a: __import__("bot.stack", fromlist=["stop"]).stop())

    build = sub.add_parser("build", help="run one prebuild through the configured builder, printing progress")
    build.add_argument("repo", metavar="OWNER/REPO", help="or a clone URL with --name")
    build.add_argument("--ref", default=None, help="branch, tag or sha (default: the default branch)")
    build.add_argument("--clone-url", default=None, help="clone from here (default: https://github.com/OWNER/REPO)")
    build.add_argument("--rebuild", action="store_true", help="build even if the image exists")
    build.set_defaults(func=_build)

    dl = sub.add_parser("deliveries", help="list dead webhook deliveries (--dead) or requeue one (--retry ID)")
    which = dl.add_mutually_exclusive_group(required=True)
    which.add_argument("--dead", action="store_true", help="list deliveries that failed for good (newest first)")
    which.add_argument("--retry", metavar="ID", help="requeue a dead delivery (its X-GitHub-Delivery id)")
    dl.add_argument("--limit", type=int, default=100, help="how many to list (default 100)")
    dl.add_argument("--config", help="YAML file with settings (the environment wins)")
    dl.set_defaults(func=_deliveries)

    pod = sub.add_parser("build-pod", help="print the Kubernetes build pod for OWNER/REPO at SHA as YAML")
    pod.add_argument("repo", metavar="OWNER/REPO")
    pod.add_argument("sha")
    pod.set_defaults(func=_build_pod)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
