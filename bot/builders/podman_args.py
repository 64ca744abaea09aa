"""What ``PodmanEngine`` passes to podman, decided over plain data (pure).

repo2docker's ``build()`` arguments and the engine's options become the
``podman build`` / ``podman push`` / ``podman login`` command lines here; the
engine only reads files and runs the commands. See ``podman_engine`` for what
each option means.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping

from bot.builders.podman_leftovers import BUILD_ID_ARG

CONTAINER_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"

_FROM_RE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)


# ---------------------------------------------------------------- image references
def split_reference(ref: str) -> tuple[str | None, str]:
    """('registry host' or None, rest) for an image reference."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return None, ref


def registry_host(ref: str) -> str:
    """The registry host[:port] an image reference points at (``docker.io`` if none)."""
    host, _ = split_reference(ref)
    return host or "docker.io"


def is_loopback_registry(ref_or_host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``[::1]`` registries (any port)."""
    host = ref_or_host if "/" not in ref_or_host else registry_host(ref_or_host)
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cache_repository_of(ref: str) -> str:
    """An image reference without tag or digest (what ``--cache-from/--cache-to`` take)."""
    ref = ref.split("@", 1)[0]
    host, rest = split_reference(ref)
    rest = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return f"{host}/{rest}" if host else rest


def dockerfile_base_images(text: str) -> list[str]:
    """The images a Dockerfile's FROM lines pull (earlier stage names excluded)."""
    stages: set[str] = set()
    images = []
    for m in _FROM_RE.finditer(text):
        image, alias = m.group(1), m.group(2)
        if image.lower() not in stages and image != "scratch":
            images.append(image)
        if alias:
            stages.add(alias.lower())
    return images


# ---------------------------------------------------------------- decisions
def cache_plan(
    tag: str, cache_from: list[str], push: bool, *, layer_cache: bool, cache_repository: str,
) -> tuple[str | None, bool]:
    """(repository for --cache-from, whether to --cache-to it as well)."""
    if not layer_cache:
        return (cache_repository_of(cache_from[0]) if cache_from else None), False
    repo = cache_repository_of(tag) if tag else ""
    if cache_repository:
        cache = cache_repository.replace("{repository}", repo)
    elif cache_from:
        cache = cache_repository_of(cache_from[0])
    else:
        cache = repo or None
    return cache, bool(push and cache)


def build_tls_verify(tls_verify: bool | None, cache_repo: str | None, base_images: list[str] | None) -> bool | None:
    """--tls-verify for the build: off (auto) only when the cache and every FROM image are local or loopback.

    ``base_images`` None: the Dockerfile could not be read.
    """
    if tls_verify is not None:
        return tls_verify
    if not cache_repo or not is_loopback_registry(cache_repo) or base_images is None:
        return None
    for image in base_images:
        if "$" in image:
            return None
        host, _ = split_reference(image)
        if host is None or not (host == "localhost" or is_loopback_registry(host)):
            return None
    return False


def push_tls_verify(tls_verify: bool | None, tag: str) -> bool | None:
    if tls_verify is None and is_loopback_registry(tag):
        return False
    return tls_verify


def pip_conf_text(index_url: str) -> str:
    """The pip.conf mounted during RUN steps: trust the host CA bundle (as PIP_CERT would)."""
    lines = ["[global]", f"cert = {CONTAINER_CA_PATH}"]
    if index_url:
        lines.append(f"index-url = {index_url}")
    return "\n".join(lines) + "\n"


def _tls_flag(verify: bool | None) -> list[str]:
    return [] if verify is None else [f"--tls-verify={'true' if verify else 'false'}"]


# ---------------------------------------------------------------- command lines
@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """One ``podman build``: repo2docker's arguments and the engine's options, resolved."""

    build_id: str
    context: str
    dockerfile: str
    iidfile: str
    image_format: str = "docker"
    tag: str = ""
    buildargs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    platform: str | None = None
    network: str = ""
    pull: str = ""
    limits: Mapping[str, object] = dataclasses.field(default_factory=dict)
    ca_bundle: str = ""  # a host path (resolved), mounted at CONTAINER_CA_PATH
    pip_conf: str | None = None  # a host path, mounted at /etc/pip.conf
    volumes: Iterable[str] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cache_repo: str | None = None
    cache_to: bool = False
    tls_verify: bool | None = None
    authfile: str | None = None
    extra: Iterable[str] = ()


def build_command(podman: list[str], spec: BuildSpec) -> list[str]:
    a = [*podman, "build", "--layers", "--force-rm", f"--format={spec.image_format}"]
    # names this build's working containers; early in the logged line (long lines are cut)
    a += ["--build-arg", f"{BUILD_ID_ARG}={spec.build_id}"]
    a += ["--file", spec.dockerfile]
    if spec.tag:
        a += ["--tag", spec.tag]
    for k, v in spec.buildargs.items():
        a += ["--build-arg", f"{k}={v}"]
    for k, v in spec.labels.items():
        a += ["--label", f"{k}={v}"]
    if spec.platform:
        a += ["--platform", spec.platform]
    if spec.network:
        a += ["--network", spec.network]
    if spec.pull:
        a += [f"--pull={spec.pull}"]
    for key, flag in (("memory", "--memory"), ("memswap", "--memory-swap"), ("cpusetcpus", "--cpuset-cpus"),
                      ("cpushares", "--cpu-shares")):
        if spec.limits.get(key):
            a += [flag, str(spec.limits[key])]
    if spec.ca_bundle:
        a += ["--volume", f"{spec.ca_bundle}:{CONTAINER_CA_PATH}:ro"]
    if spec.pip_conf:
        a += ["--volume", f"{spec.pip_conf}:/etc/pip.conf:ro"]
    for v in spec.volumes:
        a += ["--volume", v]
    for k, v in spec.env.items():
        a += ["--env", f"{k}={v}"]
    if spec.cache_repo:
        a += ["--cache-from", spec.cache_repo]  # podman 4.3 takes one repository
        if spec.cache_to:
            a += ["--cache-to", spec.cache_repo]
    a += _tls_flag(spec.tls_verify)
    if spec.authfile:
        a += ["--authfile", spec.authfile]
    a += ["--iidfile", spec.iidfile]
    a += list(spec.extra)
    a.append(spec.context)
    return a


def push_command(
    podman: list[str], tag: str, *, tls_verify: bool | None, authfile: str | None, digestfile: str,
    extra: Iterable[str] = (),
) -> list[str]:
    a = [*podman, "push", *_tls_flag(push_tls_verify(tls_verify, tag))]
    if authfile:
        a += ["--authfile", authfile]
    return [*a, "--digestfile", digestfile, *extra, tag]


def login_command(podman: list[str], registry: str, username: str, *, authfile: str, tls_verify: bool | None,
                  ) -> list[str]:
    """``podman login`` (the password goes to stdin)."""
    host = registry.split("://", 1)[-1].rstrip("/")  # repo2docker's registry may be a URL
    a = [*podman, "login", "--authfile", authfile, "--username", username, "--password-stdin"]
    if tls_verify is False or (tls_verify is None and is_loopback_registry(host)):
        a.append("--tls-verify=false")
    return [*a, host]
