"""jupyterhub-idle-culler as a Hub-managed service that stops when the Hub asks.

JupyterHub stops a managed service with SIGINT and sends SIGTERM only after
``interrupt_timeout`` (30 s, not configurable for services). The culler is started
with SIGINT ignored, so every Ctrl-C on ``./dev serve`` waited those 30 s. Here
SIGINT and SIGTERM end it at once; everything else is the culler's own ``main``.
"""
from __future__ import annotations

import signal
import sys
from types import FrameType


def _exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGINT, _exit)
    signal.signal(signal.SIGTERM, _exit)
    print("idle-culler: stops on SIGINT or SIGTERM", file=sys.stderr, flush=True)
    from jupyterhub_idle_culler import main as culler_main

    culler_main()


if __name__ == "__main__":
    main()
