"""LocalBuilder's pure parts: repo2docker's command line and config, the child's environment,
the one-line failure reason. No engine needed."""
from __future__ import annotations

import shlex

import pytest
from traitlets.config.loader import PyFileConfigLoader

from bot.builders.local_r2d import BadJob, child_env, failure_reason, r2d_args, r2d_config
from tests.git_server import Commit
from tests.local_builder_helpers import SHA, make_job


def test_command_line_and_config(tmp_path):
    job = make_job(Commit("https://git.example/o/r.git", SHA),
                   "reg:5000/p/o-r:" + SHA, subdir="/binder/", cache_from="reg:5000/p/o-r:old", token="ghs_secret")
    args = r2d_args(job, container_engine="podman", push=True, config_path="/c.py", python="/py")
    assert args[:3] == ["/py", "-m", "repo2docker"]
    joined = shlex.join(args)
    for flag in ("--config /c.py", "--engine podman", "--json-logs", "--no-run", "--user-id 1000",
                 "--user-name jovyan", f"--ref {SHA}", f"--image-name reg:5000/p/o-r:{SHA}", "--push",
                 "--cache-from reg:5000/p/o-r:old", "--subdir binder"):
        assert flag in joined
    assert args[-1] == "https://git.example/o/r.git"
    assert "ghs_secret" not in joined
    no_push = r2d_args(job, container_engine="docker", push=False, config_path="/c.py", python="/py")
    assert "--push" not in no_push and "--engine" in no_push and no_push[no_push.index("--engine") + 1] == "docker"

    for bad in ("/srv/some/dir", "file:///srv/repo", "--upload-pack=evil", "https://x/ y"):
        with pytest.raises(BadJob):
            r2d_args(make_job(Commit(bad, SHA), "i:t"),
                     container_engine="podman", push=False, config_path="/c", python="/py")

    # the config file restricts repo2docker to the Git content provider
    from repo2docker.app import Repo2Docker
    from repo2docker.contentproviders import Git
    (tmp_path / "r2d_config.py").write_text(r2d_config("podman --root /x"))
    loader = PyFileConfigLoader("r2d_config.py", str(tmp_path)).load_config()
    r2d = Repo2Docker(config=loader)
    assert r2d.content_providers == [Git]
    assert loader.PodmanEngine.podman_command == ["podman", "--root", "/x"]


def test_child_env_is_an_allowlist_and_carries_the_token_only_for_git():
    job = make_job(Commit("https://git.example:8443/o/r.git", SHA), "i:t",
                   token="ghs_tok")
    base = {"PATH": "/usr/bin", "DOCKER_HOST": "unix:///p.sock", "CONTAINERS_CONF": "/c.conf",
            "GITHUB_WEBHOOK_SECRET": "whsec", "GITHUB_PRIVATE_KEY": "pem", "JUPYTERHUB_API_TOKEN": "hub",
            "LC_ALL": "C.UTF-8"}
    env = child_env(base, job=job, container_engine="podman")
    assert {"DOCKER_HOST", "CONTAINERS_CONF", "LC_ALL", "PATH"} <= set(env)
    assert not {"GITHUB_WEBHOOK_SECRET", "GITHUB_PRIVATE_KEY", "JUPYTERHUB_API_TOKEN"} & set(env)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_KEY_0"] == "credential.https://git.example:8443.helper"
    assert [k for k, v in env.items() if "ghs_tok" in v] == ["BINDER_PREBUILD_GIT_TOKEN"]
    public = child_env(base, job=make_job(Commit("https://g/o/r", SHA), "i:t"),
                       container_engine="podman")
    assert "GIT_CONFIG_COUNT" not in public and "BINDER_PREBUILD_GIT_TOKEN" not in public


def test_failure_reason_is_one_line():
    tail = ["STEP 3/6: RUN exit 3", 'Error: building at STEP "RUN exit 3": while running runtime: exit status 3']
    assert failure_reason(None, tail, 1) == 'Error: building at STEP "RUN exit 3": while running runtime: exit status 3'
    multi = "Error during build: podman push exited with 125:\nGetting image source signatures\nError: pinging: refused"
    assert failure_reason(multi, [], 1) == "Error during build: podman push exited with 125: Error: pinging: refused"
    assert failure_reason(None, ["all fine"], 2) == "repo2docker exited with code 2"
    assert failure_reason(None, [], -9) == "repo2docker was stopped by signal 9"
