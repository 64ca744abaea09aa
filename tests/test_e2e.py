"""End to end on one machine: a push becomes a notebook server, for real.

The stack is what the README's first command starts (``binder-prebuild up``): the
local engine (a rootful Podman API socket and a docker-registry, reused from the
``local_engine`` fixture through local-engine.sh's idempotent ``up``), JupyterHub with
configurable-http-proxy from launcher/jupyterhub_config.py running ``binder-prebuild
serve`` as a Hub-managed service, DockerSpawner on Podman's socket (host network) and
the idle culler with a short timeout. Only GitHub is faked (FakeGitHub, in its own
thread); the repository is a real git repository served over smart HTTP on loopback.

What happens (one test, because each step needs the previous one's state):

1. ``push`` to main (Dockerfile ``FROM`` the offline base image, pip-installing
   jupyterhub and jupyter-server, and a notebook): repo2docker builds image A and
   pushes it. The check run said in_progress before A's manifest was in the
   registry, and success only after.
2. A second commit changing only the notebook, on a branch: ``pull_request`` (opened)
   and ``push`` deliveries. Image B is built with ``--cache-from`` A (the newest image
   of the default branch). Check run and the one PR comment: building before B's
   manifest appeared, ready only after.
3. The launch link in the PR comment, followed like a browser (page, event stream,
   redirect with token), ends at a server running image B that serves commit 2's
   notebook; the idle culler then stops it and its container goes away.

Both build times are printed (a benchmark figure, not an assertion). On failure the
stack's log (Hub, service, culler), FakeGitHub's rejects and the build records are printed.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import jupyter_server
import jupyterhub
import pytest
import requests

from bot.images import effective_prefix, image_name
from tests import payloads
from tests.e2e_stack import FakeGitHubThread, RegistryWatch, Sighting, Stack, build_records, free_port, \
    launch_events_url, read_events, wait_until
from tests.fake_github_base import FakeCommit

pytestmark = pytest.mark.e2e

OWNER, REPO = "e2e-org", "notebook-demo"
FULL = f"{OWNER}/{REPO}"
NOTEBOOK = "analysis.ipynb"
PR_NUMBER = 1
SECRET = "e2e-webhook-secret-" + uuid.uuid4().hex
CULL_TIMEOUT, CULL_EVERY = 30, 5
FIRST_BUILD_TIMEOUT = 600  # a cold pip install of jupyterhub + jupyter-server, and a first push
CHECK_RUNS = rf"/repos/{OWNER}/{REPO}/check-runs(?:/\d+)?"
COMMENTS = rf"/repos/{OWNER}/{REPO}/issues/(?:{PR_NUMBER}/comments|comments/\d+)"


def notebook(text: str) -> str:
    return json.dumps({
        "cells": [{"cell_type": "markdown", "id": "intro", "metadata": {}, "source": [text]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }, indent=1) + "\n"


def dockerfile(base: str, run_id: str) -> str:
    """A Binder Dockerfile (repo2docker's Dockerfile buildpack): offline base + the Hub's versions.

    ``run_id`` keeps each test run's first build cold (no cached pip layer from an
    earlier run); the notebook is copied last, so a notebook-only commit reuses the pip layer.
    """
    return f"""FROM {base}
ARG NB_USER=jovyan
ARG NB_UID=1000
ENV HOME=/home/${{NB_USER}} USER=${{NB_USER}} VIRTUAL_ENV=/opt/venv \\
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN echo "e2e run {run_id}" > /etc/e2e-run \\
 && python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off \\
      jupyterhub=={jupyterhub.__version__} jupyter-server=={jupyter_server.__version__} \\
 && echo "${{NB_USER}}:x:${{NB_UID}}:${{NB_UID}}::/home/${{NB_USER}}:/bin/bash" >> /etc/passwd \\
 && echo "${{NB_USER}}:x:${{NB_UID}}:" >> /etc/group \\
 && mkdir -p /home/${{NB_USER}} && chown ${{NB_UID}}:${{NB_UID}} /home/${{NB_USER}}
COPY --chown=${{NB_UID}}:${{NB_UID}} . /home/${{NB_USER}}
USER ${{NB_USER}}
WORKDIR /home/${{NB_USER}}
"""


# ---------------------------------------------------------------------------
# git: main holds the Binder repo; a branch changes only the notebook
# ---------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd.parent), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def commit_on_branch(git_server: Any, name: str, branch: str, files: dict[str, str], message: str) -> str:
    """A commit on a new ``branch`` (GitServer.commit only moves main), pushed to the served repo."""
    work = git_server.work / name
    git(work, "checkout", "--quiet", "-B", branch)
    for rel, text in files.items():
        (work / rel).write_text(text)
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", message)
    git(work, "push", "--quiet", str(git_server.repos / f"{name}.git"), f"HEAD:refs/heads/{branch}")
    return git(work, "rev-parse", "HEAD")


def mirror_commit(gh: FakeGitHubThread, sha: str, message: str, files: dict[str, str], parents: list[str],
                  branch: str) -> None:
    """The same commit (same sha, same files) in FakeGitHub, so the API agrees with git."""
    def add() -> None:
        repo = gh.fake.repo(FULL)
        tree = dict(repo.commits[parents[0]].files) if parents else {}
        tree.update({k: v.encode() for k, v in files.items()})
        repo.commits[sha] = FakeCommit(sha, message, tree, parents)
        repo.branches[branch] = sha

    gh.call(add)


# ---------------------------------------------------------------------------
# deliveries with GitHub's payload shapes
# ---------------------------------------------------------------------------

def push_body(inst: int, clone_url: str, branch: str, before: str, sha: str, message: str,
              added: list[str], modified: list[str]) -> dict[str, Any]:
    body = payloads.rewrite(payloads.load("push.branch"), repo=FULL, sha=sha, clone_url=clone_url,
                            installation_id=inst)
    body.update(ref=f"refs/heads/{branch}", before=before, created=before == "0" * 40, base_ref=None,
                compare=f"https://github.com/{FULL}/compare/{before[:12]}...{sha[:12]}")
    head = body["head_commit"]
    head.update(id=sha, tree_id=uuid.uuid4().hex + uuid.uuid4().hex[:8], message=message, added=added,
                modified=modified, removed=[], url=f"https://github.com/{FULL}/commit/{sha}")
    body["commits"] = [dict(head)]
    return body


def pull_request_body(inst: int, clone_url: str, head_sha: str, base_sha: str, branch: str) -> dict[str, Any]:
    body = payloads.rewrite(payloads.load("pull_request.opened"), repo=FULL, sha=head_sha, clone_url=clone_url,
                            installation_id=inst)
    pr = body["pull_request"]
    body["number"] = pr["number"] = PR_NUMBER
    pr["head"].update(ref=branch, label=f"{OWNER}:{branch}")
    pr["base"].update(ref="main", sha=base_sha, label=f"{OWNER}:main")
    for key in ("url", "html_url", "issue_url", "comments_url", "review_comments_url", "commits_url",
                "statuses_url", "diff_url", "patch_url"):
        if isinstance(pr.get(key), str):
            pr[key] = re.sub(r"/(pulls?|issues)/\d+", rf"/\1/{PR_NUMBER}", pr[key])
    return body


def deliver(public_url: str, event: str, body: dict[str, Any]) -> str:
    delivery = str(uuid.uuid4())
    headers, raw = payloads.signed(event, body, SECRET, delivery_id=delivery)
    resp = requests.post(f"{public_url}/webhooks/github", data=raw, headers=headers, timeout=30)
    assert resp.status_code == 202, (event, resp.status_code, resp.text)
    return delivery


# ---------------------------------------------------------------------------
# what FakeGitHub was told, in time order
# ---------------------------------------------------------------------------

def check_run_reports(gh: FakeGitHubThread, sha: str) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, body) of every accepted create/update of the Binder check run on ``sha``."""
    fake = gh.fake
    out = []
    for r in gh.call(lambda: list(fake.requests)):
        if r.method not in ("POST", "PATCH") or not re.fullmatch(CHECK_RUNS, r.path) or r.status not in (200, 201) \
                or not isinstance(r.json, dict):
            continue
        if r.method == "POST":
            if r.json.get("head_sha") != sha or r.json.get("name") != "Binder":
                continue
        else:
            run = fake.check_runs.get(int(r.path.rsplit("/", 1)[1]))
            if run is None or run["head_sha"] != sha:
                continue
        out.append((r.at, r.json))
    return out


def comment_reports(gh: FakeGitHubThread) -> list[tuple[float, str]]:
    """(arrival time, body) of every accepted create/edit of a comment on the PR."""
    return [(r.at, r.json["body"]) for r in gh.call(lambda: list(gh.fake.requests))
            if r.method in ("POST", "PATCH") and re.fullmatch(COMMENTS, r.path) and r.status in (200, 201)
            and isinstance(r.json, dict) and "body" in r.json]


def binder_runs(gh: FakeGitHubThread, sha: str) -> list[dict[str, Any]]:
    return [r for r in gh.call(gh.fake.check_runs_for, FULL, sha) if r["name"] == "Binder"]


def bot_comments(gh: FakeGitHubThread) -> list[dict[str, Any]]:
    return [c for c in gh.call(gh.fake.comments_on, FULL, PR_NUMBER)
            if c["body"].startswith("<!-- binder-prebuild -->")]


def assert_feedback_follows_registry(label: str, reports: list[tuple[float, str]], building: Any, ready: Any,
                                     absent: float | None, present: float | None) -> None:
    """Some "building" report before the manifest was there; every "ready" one after it was last absent."""
    assert present is not None, f"{label}: the image's manifest never appeared in the registry"
    assert absent is not None, f"{label}: the registry was never seen without the image (watch started too late)"
    early = [t for t, body in reports if building(body)]
    done = [t for t, body in reports if ready(body)]
    assert early and min(early) < present, \
        f"{label}: no 'building' report before the manifest appeared ({present:.2f}); reports at {early}"
    assert done, f"{label}: never reported ready"
    assert min(done) > absent, (f"{label}: reported ready at {min(done):.2f}, "
                                f"but the registry had no manifest at {absent:.2f}")


def present_sighting(watch: RegistryWatch, image: str) -> Sighting:
    """The watch's sighting once it has seen the manifest (it polls every 0.1 s).

    Feedback said "ready" only after the scheduler found the manifest, so it is
    there by now; the watch may just not have polled since. Waiting for its poll
    keeps the check strict: "ready" must still come after its last "absent".
    """
    wait_until(f"the registry watch to see {image}", lambda: watch.sighting(image).first_present is not None,
               10, interval=0.05)
    return watch.sighting(image)


def is_in_progress(body: dict[str, Any]) -> bool:
    return body.get("status") == "in_progress"


def is_success(body: dict[str, Any]) -> bool:
    return body.get("conclusion") == "success"


# ---------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------

@pytest.fixture
def e2e(local_engine, base_image, git_server, github_key, tmp_path):
    """FakeGitHub, the registry watch and ``binder-prebuild up``; everything stopped afterwards."""
    gh = FakeGitHubThread(github_key)
    gh.start()
    watch = RegistryWatch(local_engine.registry_url, authorization=local_engine.registry_authorization)
    watch.start()
    key = tmp_path / "app-key.pem"
    key.write_text(github_key)
    key.chmod(0o600)
    port, hub_port = free_port(), free_port()
    public_url, hub_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{hub_port}"
    env = {k: v for k, v in local_engine.env.items() if not k.startswith("JUPYTERHUB_")}
    env.update(
        DATA_DIR=str(tmp_path / "data"), HOST="127.0.0.1", PORT=str(port), PUBLIC_URL=public_url,
        JUPYTERHUB_BIND_URL=hub_url, JUPYTERHUB_URL=hub_url, JUPYTERHUB_HUB_PORT=str(free_port()),
        JUPYTERHUB_PROXY_API_PORT=str(free_port()), CULL_TIMEOUT=str(CULL_TIMEOUT), CULL_EVERY=str(CULL_EVERY),
        BUILDER="local", REGISTRY_URL=local_engine.registry_url, GITHUB_API_URL=gh.fake.url,
        GITHUB_APP_ID=str(gh.fake.app_id), GITHUB_PRIVATE_KEY_PATH=str(key), GITHUB_WEBHOOK_SECRET=SECRET,
    )
    env.pop("GITHUB_PRIVATE_KEY", None)
    stack = Stack(env=env, data_dir=tmp_path / "data", log_path=tmp_path / "stack.log",
                  public_url=public_url, hub_url=hub_url)
    images: list[str] = []
    try:
        yield gh, watch, stack, images
    finally:
        stack.stop()
        watch.stop()
        gh.stop()
        for image in images:  # its containers, then it and the layers only it uses (the base stays)
            ids = local_engine.podman("ps", "--all", "--quiet", "--filter", f"ancestor={image}").stdout.split()
            if ids:
                local_engine.podman("rm", "--force", *ids)
        if images:
            local_engine.podman("rmi", "--ignore", *images, timeout=300)


def test_push_builds_reports_launches_and_culls(e2e, local_engine, base_image, git_server, tmp_path, capsys):
    gh, watch, stack, images = e2e
    started = time.monotonic()
    try:
        first, rebuild = _scenario(gh, watch, stack, images, local_engine, base_image, git_server)
    except BaseException:
        _dump(gh, stack)
        raise
    with capsys.disabled():  # benchmark figures, shown in CI's output too
        print(f"\nE2E build times: first {first:.1f} s, notebook-only rebuild {rebuild:.1f} s")
        print(f"E2E scenario (stack up to culled server): {time.monotonic() - started:.1f} s")


def _scenario(gh, watch, stack, images, local_engine, base_image, git_server) -> tuple[float, float]:
    run_id = uuid.uuid4().hex[:12]
    name = f"{REPO}-{run_id}"  # the git server lives for the session
    files1 = {"Dockerfile": dockerfile(base_image, run_id), NOTEBOOK: notebook("# Version one"),
              "README.md": "# notebook-demo\n"}
    c1 = git_server.create(name, files1, message="A Binder environment and a notebook")
    clone_url = c1.clone_url

    def setup_github() -> int:
        gh.fake.add_repo(FULL, owner_type="Organization", clone_url=clone_url)
        return gh.fake.add_installation([FULL], account_type="Organization").id

    inst = gh.call(setup_github)
    mirror_commit(gh, c1.sha, "A Binder environment and a notebook", files1, [], "main")

    prefix = effective_prefix("binder-prebuild/", local_engine.registry_url)
    image_a = image_name(OWNER, REPO, c1.sha, prefix)
    images.append(image_a)
    watch.watch(image_a)

    stack.start()
    health = stack.wait_ready()
    assert any(c["name"] == "hub" and c["ok"] for c in health["checks"]), health  # a Hub-managed service

    # 1. push to main -> image A, check run in_progress -> success
    deliver(stack.public_url, "push", push_body(inst, clone_url, "main", "0" * 40, c1.sha,
                                                "A Binder environment and a notebook",
                                                sorted(files1), []))
    wait_until("the check run on the first commit to complete",
               lambda: any(r["status"] == "completed" for r in binder_runs(gh, c1.sha)),
               FIRST_BUILD_TIMEOUT, interval=1)
    (run_a,) = binder_runs(gh, c1.sha)
    assert run_a["conclusion"] == "success", run_a
    seen_a = present_sighting(watch, image_a)
    assert_feedback_follows_registry("check run A", check_run_reports(gh, c1.sha), is_in_progress, is_success,
                                     seen_a.last_absent, seen_a.first_present)
    assert watch.manifest_status(image_a) == 200
    asked = [r.status for r in gh.call(gh.fake.calls, "GET", rf"/repos/{FULL}/contents/\.github/binder\.yml")
             if r.query.get("ref") == c1.sha]
    assert asked and set(asked) == {404}, asked  # no .github/binder.yml: the defaults
    labels = json.loads(local_engine.podman("image", "inspect", image_a, check=True).stdout)[0]["Labels"]
    assert labels.get("repo2docker.ref") == c1.sha and labels.get("repo2docker.repo") == clone_url, labels

    # 2. a notebook-only commit on a branch, a PR and its push -> image B with --cache-from A
    files2 = {NOTEBOOK: notebook("# Version two, from the pull request")}
    sha2 = commit_on_branch(git_server, name, "feature", files2, "Only the notebook changes")
    mirror_commit(gh, sha2, "Only the notebook changes", files2, [c1.sha], "feature")
    gh.call(gh.fake.add_pull, FULL, PR_NUMBER, head_sha=sha2, head_ref="feature")
    image_b = image_name(OWNER, REPO, sha2, prefix)
    images.append(image_b)
    watch.watch(image_b)
    deliver(stack.public_url, "pull_request", pull_request_body(inst, clone_url, sha2, c1.sha, "feature"))
    deliver(stack.public_url, "push", push_body(inst, clone_url, "feature", "0" * 40, sha2,
                                                "Only the notebook changes", [], [NOTEBOOK]))
    wait_until("the PR's check run to complete", lambda: any(r["status"] == "completed" for r in
                                                             binder_runs(gh, sha2)), 300, interval=0.5)
    (run_b,) = binder_runs(gh, sha2)
    assert run_b["conclusion"] == "success", run_b
    wait_until("the PR comment to say ready", lambda: any("**Ready**" in c["body"] for c in bot_comments(gh)),
               30, interval=0.2)
    seen_b = present_sighting(watch, image_b)
    assert_feedback_follows_registry("check run B", check_run_reports(gh, sha2), is_in_progress, is_success,
                                     seen_b.last_absent, seen_b.first_present)
    (comment,) = bot_comments(gh)
    assert_feedback_follows_registry("PR comment", comment_reports(gh), lambda b: "**Building**" in b,
                                     lambda b: "**Ready**" in b, seen_b.last_absent, seen_b.first_present)
    assert sha2[:7] in comment["body"]

    records = {r["image"]: r for r in build_records(stack.data_dir / "binder-prebuild.sqlite")
               if r["state"] == "built"}
    rec_a, rec_b = records[image_a], records[image_b]
    assert rec_a["cache_from"] is None, rec_a
    assert rec_b["cache_from"] == image_a, rec_b  # the newest image of the default branch
    # ... and it reached podman (PodmanEngine passes the repository: buildah's --cache-from takes no tag)
    assert f"--cache-from {image_a.rsplit(':', 1)[0]}" in (rec_b["log_tail"] or ""), rec_b["log_tail"]
    assert watch.manifest_status(image_b) == 200
    first, rebuild = rec_a["finished_at"] - rec_a["started_at"], rec_b["finished_at"] - rec_b["started_at"]

    # 3. the PR comment's launch link, followed like a browser
    (launch,) = re.findall(r"\[Launch this commit\]\(([^)\s]+)\)", comment["body"])
    assert launch.startswith(stack.public_url + "/v2/gh/"), launch
    browser = requests.Session()
    page = browser.get(launch, timeout=60)
    assert page.status_code == 200, (page.status_code, page.text[:2000])
    phases, ready = [], None
    for event in read_events(browser, urljoin(launch, launch_events_url(page.text)), timeout=300):
        phases.append(event["phase"])
        if event["phase"] in ("ready", "failed"):
            ready = event
            break
    assert ready is not None and ready["phase"] == "ready", (phases, ready)
    # BinderHub's ready message: the server's base URL, the token apart; the page adds the token
    assert ready["url"].endswith("/") and "?" not in ready["url"], ready["url"]
    server = browser.get(ready["url"], params={"token": ready["token"]}, timeout=60)
    user = urlsplit(ready["url"]).path.split("/")[2]
    assert server.status_code == 200, (server.status_code, server.url, server.text[:1000])
    assert urlsplit(server.url).path.startswith(f"/user/{user}/"), server.url
    auth = {"Authorization": f"token {ready['token']}"}
    status = requests.get(f"{stack.hub_url}/user/{user}/api/status", headers=auth, timeout=30)
    assert status.status_code == 200, (status.status_code, status.text[:1000])
    nb = requests.get(f"{stack.hub_url}/user/{user}/api/contents/{NOTEBOOK}", headers=auth, timeout=30)
    assert nb.status_code == 200, (nb.status_code, nb.text[:1000])
    assert "Version two" in "".join(nb.json()["content"]["cells"][0]["source"])  # commit 2's notebook

    running = json.loads(local_engine.podman("ps", "--format", "json", "--filter", f"ancestor={image_b}",
                                             check=True).stdout or "[]")
    assert len(running) == 1, running
    container = json.loads(local_engine.podman("container", "inspect", running[0]["Id"], check=True).stdout)[0]
    image_id = json.loads(local_engine.podman("image", "inspect", image_b, check=True).stdout)[0]["Id"]
    assert container["ImageName"] == image_b and container["Image"] == image_id, \
        (container["ImageName"], container["Image"], image_id)

    # 4. idle: the culler stops the server, and its container goes away
    wait_until("the idle culler to stop the server",
               lambda: local_engine.podman("container", "exists", container["Id"]).returncode == 1,
               CULL_TIMEOUT + 6 * CULL_EVERY + 60, interval=1)
    assert re.search(rf"Culling server {re.escape(user)}\b", stack.log_tail(5000)), "no culler log line"
    gone = requests.get(f"{stack.hub_url}/user/{user}/api/status", headers=auth, timeout=30,
                        allow_redirects=False)
    assert gone.status_code != 200, gone.status_code
    assert not gh.fake.rejected and not gh.fake.errors, (gh.fake.rejected, gh.fake.errors)
    return first, rebuild


def _dump(gh: FakeGitHubThread, stack: Stack) -> None:
    """What one needs to see when this fails: the stack's log, FakeGitHub's view, the build records."""
    print(f"\n===== binder-prebuild up (Hub, service, culler) log tail; all of it: {stack.log_path} =====")
    print(stack.log_tail(400))
    fake = gh.fake
    print("===== FakeGitHub: rejected (422) and handler errors =====")
    for rec, why in list(fake.rejected):
        print(f"  {rec.method} {rec.path}: {why}")
    for rec, exc in list(fake.errors):
        print(f"  {rec.method} {rec.path}: {exc!r}")
    print("===== FakeGitHub: requests =====")
    for r in list(fake.requests)[-80:]:
        body = json.dumps(r.json)[:200] if r.json is not None else ""
        print(f"  {r.at:.2f} {r.method} {r.path} -> {r.status} {body}")
    db = stack.data_dir / "binder-prebuild.sqlite"
    if db.exists():
        print("===== build records =====")
        for rec in build_records(db):
            tail = (rec.pop("log_tail") or "")[-3000:]
            print(f"  {rec}\n  log tail:\n{tail}")
