"""A clean Debian 12 machine of our kind, in a container, for the `fresh` install test.

The root filesystem comes from mmdebstrap (as scripts/base-image.sh makes the e2e
base image) with what a fresh machine of this kind has: Debian's apt, python3,
git and CA certificates, and a Node.js that is not Debian's and bundles its own
npm (the host's /usr/bin/node and /usr/lib/node_modules, mounted in). It mirrors
the host's package sources so it installs from where the host does: apt sources
and apt options, local CA certificates, pip's configuration (files, PIP_*
variables and the local paths they name) and npm's. Podman runs it rootful with
runc and the containers.conf that scripts/local-engine.sh writes, on the host
network. A container has no init: no package starts its service there
(policy-rc.d says so, as in Debian's container images), so nothing it installs
listens on the host's ports.
"""
from __future__ import annotations

import configparser
import dataclasses
import datetime
import hashlib
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
INCLUDE = "ca-certificates,python3,git"
IMAGE_REPO = "localhost/binder-prebuild-fresh"
CLONE_AT = "/root/binder-prebuild"  # where the clone sits inside the machine

PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf")
NPM_CONFIG_FILES = ("~/.npmrc", "/usr/etc/npmrc")
# the machine's environment names its CA bundle for each client (Node.js, git, curl, Python)
CA_VARIABLES = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO")


@dataclasses.dataclass(frozen=True)
class Mirror:
    """Host files to show the machine read-only at the same path, and variables to pass."""

    paths: tuple[str, ...]
    env: tuple[tuple[str, str], ...]


def _path_values(value: str) -> Iterable[str]:
    """Local paths a pip setting names: absolute paths and file:// URLs, space separated.

    A file:// index (``.../simple``) links its files relative to itself (``../files/...``):
    its parent folder is what pip reads.
    """
    for token in value.split():
        if token.startswith("file://"):
            path = token[len("file://"):].rstrip("/")
            if path.startswith("/"):
                yield str(Path(path).parent) if Path(path).name == "simple" else path
        elif token.startswith("/"):
            yield token.rstrip("/")


def pip_mirror(configs: Mapping[str, str], env: Mapping[str, str], exists: Callable[[str], bool]) -> Mirror:
    """What the machine needs to see to use pip as the host does (pure: reads no file itself).

    ``configs`` maps each pip config file that exists to its text; ``env`` is the
    host's environment. Every file and every local path named in them (indexes,
    find-links, constraints, certificates) is mirrored when it exists.
    """
    paths: list[str] = []
    for path, text in configs.items():
        paths.append(path)
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text)
        except configparser.Error:
            continue
        for section in parser.sections():
            for _, value in parser.items(section):
                paths += [p for p in _path_values(value) if exists(p)]
    passed = tuple(sorted((k, v) for k, v in env.items() if k.startswith("PIP_")))
    for _, value in passed:
        paths += [p for p in _path_values(value) if exists(p)]
    return Mirror(tuple(dict.fromkeys(paths)), passed)


def host_pip_mirror() -> Mirror:
    files = [os.path.expanduser(f) for f in PIP_CONFIG_FILES]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    configs = {f: Path(f).read_text() for f in files if os.path.isfile(f)}
    return pip_mirror(configs, os.environ, os.path.exists)


def host_apt_sources() -> list[str]:
    """The host's enabled apt source files (apt reads only *.list and *.sources)."""
    found = ["/etc/apt/sources.list"] if os.path.isfile("/etc/apt/sources.list") else []
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        found += [str(p) for p in sorted(d.iterdir()) if p.suffix in (".list", ".sources") and p.is_file()]
    return [f for f in found if re.search(r"^\s*(deb|Types:|URIs:)", Path(f).read_text(), re.M)]


def host_apt_options() -> list[str]:
    """The host's apt.conf.d files that set how apt fetches (Acquire::...)."""
    d = Path("/etc/apt/apt.conf.d")
    if not d.is_dir():
        return []
    return [str(p) for p in sorted(d.iterdir()) if p.is_file() and "Acquire::" in p.read_text(errors="replace")]


def host_ca_certificates() -> list[str]:
    d = Path("/usr/local/share/ca-certificates")
    return [str(p) for p in sorted(d.rglob("*.crt"))] if d.is_dir() else []


def rootfs_tarball(cache_dir: Path, day: datetime.date | None = None) -> Path:
    """The machine's root filesystem for ``day`` (one a day, cached under ``cache_dir``)."""
    day = day or datetime.date.today()
    cmd = _mmdebstrap_command()
    inputs = [*cmd, *host_apt_sources(), *host_apt_options(), *host_ca_certificates()]
    digest = hashlib.sha256("\0".join(inputs).encode())
    for f in inputs[len(cmd):]:
        digest.update(Path(f).read_bytes())
    recipe = digest.hexdigest()[:8]  # a changed recipe, or changed host sources or CAs: a new tarball
    tar = cache_dir / f"{SUITE}-{day:%Y%m%d}-{recipe}.tar"
    if tar.exists():
        return tar
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in cache_dir.glob(f"{SUITE}-*.tar"):
        old.unlink(missing_ok=True)
    tmp = tar.with_suffix(f".tmp{os.getpid()}")
    try:
        subprocess.run([*cmd, str(tmp), *host_apt_sources()], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=1200)
    except subprocess.CalledProcessError as e:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed: {e.stderr.decode(errors='replace')[-3000:]}") from e
    tmp.rename(tar)
    return tar


def _mmdebstrap_command() -> list[str]:
    """mmdebstrap up to the output file (then come the host's source files)."""
    certs = host_ca_certificates()
    hook = ['mkdir -p "$1/usr/local/share/ca-certificates"']
    if certs:  # the host's own CAs (a proxy's, a company's): the machine trusts what the host trusts
        hook += [f'cp {shlex.quote(c)} "$1/usr/local/share/ca-certificates/"' for c in certs]
        hook += ['chroot "$1" update-ca-certificates >/dev/null']
    cmd = ["mmdebstrap", "--variant=apt", f"--include={INCLUDE}", "--components=main",
           "--aptopt=Acquire::Retries \"3\"",
           "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
           "--customize-hook=" + "; ".join(hook)]
    cmd += [f"--aptopt={f}" for f in host_apt_options()]
    cmd += ["--format=tar", SUITE]
    return cmd


def engine_env(engine_dir: Path) -> dict[str, str]:
    """The environment for podman: scripts/local-engine.sh's containers.conf (runc, ulimits)."""
    env = dict(os.environ, ENGINE_DIR=str(engine_dir), DATA_DIR=str(engine_dir))
    out = subprocess.run(["bash", str(ROOT / "scripts/local-engine.sh"), "configs"], env=env,
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"export (\w+)=(.*)$", line)
        if m and m.group(1) in ("CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF"):
            env[m.group(1)] = m.group(2)
    return env


def image_from(tar: Path, env: Mapping[str, str]) -> str:
    """Import the tarball as an image named after it (once)."""
    tag = f"{IMAGE_REPO}:{tar.stem}"
    if subprocess.run(["podman", "image", "exists", tag], env=env).returncode != 0:
        subprocess.run(["podman", "import", "--change", "ENV LANG=C.UTF-8", str(tar), tag], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        listed = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO], env=env,
                                capture_output=True, text=True).stdout.split()
        for old in set(listed) - {tag}:  # earlier days' machines
            subprocess.run(["podman", "rmi", old], env=env, capture_output=True)
    return tag


def node_mounts() -> list[str]:
    """The host's Node.js with its bundled npm: not a Debian package in the machine either."""
    return ["/usr/bin/node", "/usr/lib/node_modules"]


def run_in_machine(image: str, clone: Path, script: str, env: Mapping[str, str], log: Path,
                   timeout: float) -> int:
    """Run ``script`` (bash) as root in a new machine with ``clone`` at CLONE_AT; output to ``log``."""
    pip = host_pip_mirror()
    npm = [os.path.expanduser(f) for f in NPM_CONFIG_FILES if os.path.isfile(os.path.expanduser(f))]
    cmd = ["podman", "run", "--rm", "--network=host", "--pull=never",
           "-v", f"{clone}:{CLONE_AT}", "-w", CLONE_AT]
    for path in [*node_mounts(), *pip.paths, *npm]:
        inside = path.replace(os.path.expanduser("~"), "/root", 1) if path.startswith(os.path.expanduser("~")) else path
        cmd += ["-v", f"{path}:{inside}:ro"]
    for key, value in [*pip.env, *((k, os.environ[k]) for k in CA_VARIABLES if os.environ.get(k))]:
        cmd += ["-e", f"{key}={value}"]
    cmd += ["-e", "DEBIAN_FRONTEND=noninteractive", image, "bash", "-c", script]
    with log.open("wb") as out:
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout)
    return proc.returncode
