"""End to end, the README's "Try it without a GitHub App", for real and with GitHub never asked.

No App credentials, no webhook secret, no public URL. A public repository (real git,
served on loopback) is prebuilt with ``binder-prebuild build OWNER/REPO --ref main``
(real repo2docker on Podman, pushed to a real registry), then ``binder-prebuild up``
runs with the repository in LAUNCH_ALLOW, and its launch link, followed like a
browser, resolves ``main`` with ``git ls-remote``, finds the prebuilt image (no
second build) and lands on a running server with the repository's notebook.
GITHUB_API_URL points at FakeGitHub only to prove that nothing is asked of it.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from bot.images import effective_prefix, image_name
from tests.e2e_stack import FakeGitHubThread, RegistryWatch, Stack, free_port, launch_events_url, read_events
from tests.test_e2e import dockerfile, notebook

pytestmark = pytest.mark.e2e

OWNER = "try-org"
NOTEBOOK = "hello.ipynb"


def test_prebuild_and_launch_a_public_repository_without_an_app(local_engine, base_image, git_server, github_key,
                                                                tmp_path, capsys):
    name = "try-" + uuid.uuid4().hex[:8]
    full = f"{OWNER}/{name}"
    # a fixed run id: the pip layer is shared by every run of this test on a machine (only the notebook differs)
    commit = git_server.create(f"{OWNER}/{name}", {"Dockerfile": dockerfile(base_image, "try-without-app"),
                                                   NOTEBOOK: notebook(f"Hello from {name}")})
    gh = FakeGitHubThread(github_key)
    gh.start()
    port, hub_port = free_port(), free_port()
    public_url, hub_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{hub_port}"
    env = {k: v for k, v in local_engine.env.items() if not k.startswith(("JUPYTERHUB_", "GITHUB_"))}
    env.update(DATA_DIR=str(tmp_path / "data"), BUILDER="local", REGISTRY_URL=local_engine.registry_url,
               GITHUB_API_URL=gh.fake.url)
    image = image_name(OWNER, name, commit.sha, effective_prefix("binder-prebuild/", local_engine.registry_url))
    stack = Stack(env=dict(env, HOST="127.0.0.1", PORT=str(port), PUBLIC_URL=public_url, LAUNCH_ALLOW=full,
                           JUPYTERHUB_BIND_URL=hub_url, JUPYTERHUB_URL=hub_url,
                           JUPYTERHUB_HUB_PORT=str(free_port()), JUPYTERHUB_PROXY_API_PORT=str(free_port())),
                  data_dir=tmp_path / "data", log_path=tmp_path / "stack.log", public_url=public_url, hub_url=hub_url)
    try:
        # 1. the prebuild, from the command line (the clone URL given: the repository is on loopback)
        started = time.monotonic()
        cli = subprocess.run([str(Path(sys.executable).parent / "binder-prebuild"), "build", full, "--ref", "main",
                              "--clone-url", commit.clone_url], env=env, capture_output=True, text=True, timeout=900)
        build_time = time.monotonic() - started
        assert cli.returncode == 0, (cli.stdout[-3000:], cli.stderr[-3000:])
        assert f"built: {image}" in cli.stdout, cli.stdout[-3000:]
        registry = RegistryWatch(local_engine.registry_url, authorization=local_engine.registry_authorization)
        assert registry.manifest_status(image) == 200

        # 2. the service, allowed to launch it without an installation
        stack.start()
        stack.wait_ready(180)
        # the setup link the service logged (the page is the operator's): it shows the same steps
        setup_link = re.search(r"(http://\S+/\?token=[\w-]+)", stack.log_tail(2000))
        assert setup_link, stack.log_tail()
        setup = requests.get(setup_link.group(1), timeout=30).text
        assert "Try it without a GitHub App" in setup and f'href="{public_url}/v2/gh/{full}/HEAD"' in setup

        # 3. the launch link, like a browser: resolved by git, the prebuilt image, a running server
        browser = requests.Session()
        launch = f"{public_url}/v2/gh/{full}/main"
        page = browser.get(launch, timeout=60)
        assert page.status_code == 200, (page.status_code, page.text[:2000])
        events = []
        for event in read_events(browser, urljoin(launch, launch_events_url(page.text)), timeout=300):
            events.append(event)
            if event["phase"] in ("ready", "failed"):
                break
        phases = [e["phase"] for e in events]
        assert phases[0] == "built" and phases[-1] == "ready", events  # prebuilt: no second build
        ready = events[-1]
        assert ready["image"] == image and ready["repo_url"] == commit.clone_url, ready
        user = urlsplit(ready["url"]).path.split("/")[2]
        assert browser.get(ready["url"], timeout=60).status_code == 200
        nb = requests.get(f"{hub_url}/user/{user}/api/contents/{NOTEBOOK}",
                          headers={"Authorization": f"token {ready['token']}"}, timeout=30)
        assert nb.status_code == 200 and f"Hello from {name}" in "".join(nb.json()["content"]["cells"][0]["source"])

        # the whole way without GitHub: refs by git ls-remote, the clone URL from the build record
        assert gh.fake.requests == [], [(r.method, r.path) for r in gh.fake.requests]
        assert git_server.ref_adverts(f"{OWNER}/{name}") >= 3  # the build's HEAD + main, its clone, the launch
    except BaseException:
        print(f"\n===== binder-prebuild up log tail ({stack.log_path}) =====\n{stack.log_tail(300)}")
        raise
    finally:
        stack.stop()
        gh.stop()
        ids = local_engine.podman("ps", "--all", "--quiet", "--filter", f"ancestor={image}").stdout.split()
        if ids:
            local_engine.podman("rm", "--force", *ids)
        local_engine.podman("rmi", "--ignore", image, timeout=300)
    with capsys.disabled():
        print(f"\nwithout an App: command-line prebuild {build_time:.1f} s")
