"""README's install path on a fresh machine of our kind (issue 10): a clean Debian 12 container.

The machine has python3, git and a Node.js that bundles its own npm (not Debian's
nodejs), and no Podman, registry or Chromium, like the machines the project runs
on. In a clone of this repository, ``./dev install`` (what ``./dev serve`` and
``./dev test`` run first) must end "install: ready", never ask apt for Debian's
npm, and leave a working .venv and configurable-http-proxy.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.fresh_machine import (
    ROOT,
    engine_env,
    image_from,
    pip_mirror,
    rootfs_tarball,
    run_in_machine,
)

SCRIPT = r"""
set -u
# a container has no init: installed packages do not start their services (a registry on :5000)
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
# the machine's Node.js came with its own npm (as NodeSource's does): put it on PATH
ln -sf /usr/lib/node_modules/npm/bin/npm-cli.js /usr/bin/npm
ln -sf /usr/lib/node_modules/npm/bin/npx-cli.js /usr/bin/npx
echo "FACT before-podman=$(command -v podman || echo none)"
echo "FACT before-chromium=$(command -v chromium || echo none)"
./dev install
echo "FACT install-rc=$?"
for pkg in npm nodejs podman chromium docker-registry mmdebstrap python3-venv; do
  echo "FACT deb-$pkg=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && echo yes || echo no)"
done
echo "FACT node=$(command -v node) $(node --version)"
.venv/bin/python -c 'import bot.app, launcher.routes, jupyterhub, repo2docker; print("FACT venv-imports=ok")'
.venv/bin/binder-prebuild --help >/dev/null && echo "FACT cli=ok"
test -x .cache/node/node_modules/.bin/configurable-http-proxy && echo "FACT chp=ok"
./dev install >/dev/null 2>second.log; echo "FACT second-rc=$?"
grep -c "installing" second.log | sed 's/^/FACT second-installs=/'
"""


@pytest.mark.fresh
@pytest.mark.timeout(2700)
def test_readme_install_path_ends_ready_on_a_clean_debian_12(tmp_path):
    for tool in ("mmdebstrap", "podman", "runc", "git"):
        assert shutil.which(tool), f"{tool} is installed by ./dev install on the host (scripts/install_plan.py)"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = engine_env(tmp_path / "engine")
    tar = rootfs_tarball(ROOT / ".cache" / "fresh")
    image = image_from(tar, env)
    log = tmp_path / "machine.log"
    try:
        rc = run_in_machine(image, clone, SCRIPT, env, log, timeout=2400)
    finally:
        # the clone holds root-owned files the machine made (.venv, .cache): remove them here
        shutil.rmtree(clone, ignore_errors=True)
    out = log.read_text(errors="replace")
    facts = dict(re.findall(r"^FACT ([\w-]+)=(.*)$", out, re.M))
    tail = "\n".join(out.splitlines()[-40:])
    assert rc == 0, f"the machine's script failed ({rc}):\n{tail}"
    # a fresh machine: nothing of the stack yet, and Node.js not from Debian
    assert facts["before-podman"] == "none" and facts["before-chromium"] == "none", tail
    assert facts["node"].startswith("/usr/bin/node v"), tail
    # the README's path ends ready ...
    assert facts["install-rc"] == "0", tail
    install_lines = [ln for ln in out.splitlines() if ln.startswith("install: ")]
    assert install_lines and install_lines[-1] == "install: ready", tail
    # ... having installed what was missing and nothing apt cannot give beside this Node.js
    assert facts["deb-npm"] == "no" and facts["deb-nodejs"] == "no", tail
    for pkg in ("podman", "chromium", "docker-registry", "mmdebstrap", "python3-venv"):
        assert facts[f"deb-{pkg}"] == "yes", (pkg, tail)
    assert facts["venv-imports"] == "ok" and facts["cli"] == "ok" and facts["chp"] == "ok", tail
    # and a second run is a no-op that is still ready
    assert facts["second-rc"] == "0" and facts["second-installs"] == "0", tail


def test_pip_mirror_takes_the_files_and_the_local_paths_they_name():
    configs = {
        "/etc/pip.conf": "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nconstraint = /etc/xdg/pip/c.txt\n",
        "/root/.config/pip/pip.conf": "[global]\nfind-links = /opt/wheels\n"
                                      "extra-index-url = file:///opt/pypi/simple https://example.org/simple\n",
    }
    env = {"PIP_FIND_LINKS": "/opt/more", "PIP_DEFAULT_TIMEOUT": "180", "HOME": "/root"}
    here = {"/etc/ssl/certs/ca-certificates.crt", "/etc/xdg/pip/c.txt", "/opt/wheels", "/opt/pypi"}
    mirror = pip_mirror(configs, env, here.__contains__)
    assert mirror.paths == ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt", "/etc/xdg/pip/c.txt",
                            "/root/.config/pip/pip.conf", "/opt/wheels", "/opt/pypi")  # the index's root
    assert dict(mirror.env) == {"PIP_FIND_LINKS": "/opt/more", "PIP_DEFAULT_TIMEOUT": "180"}  # /opt/more: absent
