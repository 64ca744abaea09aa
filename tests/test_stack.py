"""``binder-prebuild up`` (bot/stack.py): what it starts and says, with the processes replaced.

The whole stack running for real is tests/test_e2e.py; these check the choices
``up`` makes before it starts anything.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bot import stack

ENGINE = {"DOCKER_HOST": "unix:///tmp/x/podman.sock", "CONTAINERS_CONF": "/tmp/x/containers.conf",
          "CONTAINERS_REGISTRIES_CONF": "/tmp/x/registries.conf", "REGISTRY_URL": "http://127.0.0.1:5000",
          "CONTAINER_ENGINE": "podman", "ENGINE_DIR": "/tmp/x"}


class FakeProc:
    def __init__(self, cmd, env=None, cwd=None):
        self.cmd, self.env = cmd, env
        self.signals = []

    def send_signal(self, signum):
        self.signals.append(signum)

    def wait(self):
        return 0


@pytest.fixture
def up(monkeypatch, tmp_path):
    """Run ``stack.main()`` with the engine answer and the installed commands given (whatever this
    machine has installed); returns (the started process, stderr)."""
    # only stack's own view of these modules: pytest's signal handlers and everyone's Popen stay
    monkeypatch.setattr(stack, "signal", types.SimpleNamespace(signal=lambda *a: None, SIGTERM=signal.SIGTERM,
                                                               SIGINT=signal.SIGINT, SIGHUP=signal.SIGHUP))
    for key in list(ENGINE) + ["PORT", "PUBLIC_URL", "JUPYTERHUB_URL", "JUPYTERHUB_BIND_URL", "NO_ENGINE"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    started = []
    asked: list = []

    def popen(cmd, env=None, cwd=None, **_kw):
        started.append(FakeProc(cmd, env, cwd))
        return started[-1]

    monkeypatch.setattr(stack, "subprocess", types.SimpleNamespace(Popen=popen, run=subprocess.run))

    def run(engine, capsys, installed=("jupyterhub", "configurable-http-proxy"), **env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(stack, "_engine_env", lambda e: (engine, "podman socket and registry up")
                            if engine else (None, "podman: command not found"))

        def which(name, path=None):
            asked.append((name, path))
            return f"/fake/bin/{name}" if name in installed else None

        monkeypatch.setattr(stack, "shutil", types.SimpleNamespace(which=which))
        monkeypatch.setattr(stack, "engine_running", lambda e: False)  # (stopping: tests/test_stack_stop.py)
        monkeypatch.setattr(stack, "_engine_down", lambda e: "")
        assert stack.main() == 0
        (proc,) = started
        return proc, capsys.readouterr().err

    run.asked = asked  # (command, PATH) of every lookup
    return run


def test_with_an_engine_the_hub_runs_the_service_and_the_registry_is_the_engines(up, capsys):
    proc, err = up(dict(ENGINE), capsys)
    assert proc.cmd[:2] == ["jupyterhub", "-f"] and proc.cmd[2].endswith("launcher/jupyterhub_config.py")
    assert proc.env["DOCKER_HOST"] == ENGINE["DOCKER_HOST"] and proc.env["REGISTRY_URL"] == ENGINE["REGISTRY_URL"]
    assert proc.env["BUILDER"] == "local" and proc.env["PUBLIC_URL"] == "http://127.0.0.1:8080"
    assert "setup page:       http://127.0.0.1:8080/" in err and "JupyterHub:       http://127.0.0.1:8000/hub/" in err


def test_a_registry_url_the_user_set_is_kept(up, capsys):
    proc, err = up(dict(ENGINE), capsys, REGISTRY_URL="https://registry.example.org")
    assert proc.env["REGISTRY_URL"] == "https://registry.example.org"
    assert proc.env["DOCKER_HOST"] == ENGINE["DOCKER_HOST"]  # the engine's socket all the same
    assert "registry https://registry.example.org" in err


def test_an_empty_registry_url_means_images_stay_in_the_engine(up, capsys):
    proc, err = up(dict(ENGINE), capsys, REGISTRY_URL="")
    assert proc.env["REGISTRY_URL"] == ""
    assert "registry none: images stay in the engine" in err


def test_without_an_engine_it_says_how_to_get_one_and_serves_the_pages(up, capsys):
    proc, err = up(None, capsys)
    assert proc.cmd == [sys.executable, "-m", "bot.cli", "serve"]
    assert "container engine: not available (podman: command not found)" in err
    assert "apt-get install podman" in err and "Serving the setup and status pages only" in err
    assert "setup page:" in err and "status page:" in err


@pytest.mark.parametrize("missing", ["jupyterhub", "configurable-http-proxy"])
def test_with_an_engine_but_no_hub_it_serves_the_bot_alone_and_says_how_to_get_the_hub(up, capsys, missing):
    installed = tuple(n for n in ("jupyterhub", "configurable-http-proxy") if n != missing)
    proc, err = up(dict(ENGINE), capsys, installed=installed)
    assert proc.cmd == [sys.executable, "-m", "bot.cli", "serve"]  # not the Hub
    assert "JupyterHub or configurable-http-proxy not found: run `./dev install` first." in err
    assert "Serving binder-prebuild without a Hub." in err
    assert "JupyterHub:" not in err and "container engine: not available" not in err
    # the service still builds on the engine and pushes to its registry
    assert proc.env["DOCKER_HOST"] == ENGINE["DOCKER_HOST"] and proc.env["REGISTRY_URL"] == ENGINE["REGISTRY_URL"]
    assert proc.env["BUILDER"] == "local"
    assert "setup page:       http://127.0.0.1:8080/" in err


def test_the_hub_commands_are_looked_up_where_dev_install_puts_them(up, capsys):
    """configurable-http-proxy comes from npm into .cache/node: that directory is on the PATH
    searched, and on the Hub's, ahead of the rest."""
    proc, _ = up(dict(ENGINE), capsys)
    node_bin = str(stack.ROOT / ".cache" / "node" / "node_modules" / ".bin")
    searched = dict(up.asked)
    assert set(searched) == {"jupyterhub", "configurable-http-proxy"}
    for path in [*searched.values(), proc.env["PATH"]]:
        dirs = path.split(os.pathsep)
        assert dirs[:2] == [str(Path(sys.executable).parent), node_bin]
