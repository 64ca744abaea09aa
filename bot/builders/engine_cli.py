"""Running the container engine's CLI (docker or podman) for a short answer."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence


async def run_engine_cli(command: Sequence[str], args: Sequence[str], *, env: Mapping[str, str] | None,
                         timeout: float) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr); (None, "", reason) when it cannot run or does not finish in time.

    A cancelled caller kills the process before the cancellation goes on.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env) if env is not None else None)
    except OSError as e:  # FileNotFoundError, PermissionError
        return None, "", f"cannot run {command[0]}: {e.strerror or e}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError) as e:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        return None, "", f"{command[0]} did not answer within {timeout:g} s"
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
