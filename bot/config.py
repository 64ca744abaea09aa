"""Settings, read once from the environment (DESIGN.md's names), optionally a YAML file.

A pure function of a mapping, so tests build settings from plain dicts.
"""
from __future__ import annotations

import dataclasses
import json
import ipaddress
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A setting has a value we cannot use."""


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def default_engine(env: Mapping[str, str] | None = None) -> str:
    """The first container engine that can work here: docker, then podman.

    A docker CLI without a daemon to talk to (no socket, no DOCKER_HOST) does not
    count when podman is there; a DOCKER_HOST that names podman means podman.
    """
    env = os.environ if env is None else env
    docker_host = env.get("DOCKER_HOST", "")
    has_podman = shutil.which("podman") is not None
    if "podman" in docker_host and has_podman:
        return "podman"
    if shutil.which("docker") and (docker_host or Path("/var/run/docker.sock").exists() or not has_podman):
        return "docker"
    return "podman" if has_podman else "docker"


def _non_negative(n: int) -> int:
    if n < 0:
        raise ConfigError(f"must not be negative: {n}")
    return n


def _node_selector(value: str) -> tuple[tuple[str, str], ...]:
    """``{"k": "v"}`` (JSON, as in a pod spec) or ``k=v,k2=v2``."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"not JSON: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ConfigError("a node selector maps label names to string values")
        return tuple(sorted(data.items()))
    pairs = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"not KEY=VALUE: {item!r}")
        pairs.append((key.strip(), val.strip()))
    return tuple(sorted(pairs))


def _tolerations(value: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of tolerations, exactly as in the user pods' spec."""
    try:
        data = json.loads(value)
    except ValueError as e:
        raise ConfigError(f"not JSON: {e}") from e
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise ConfigError("tolerations are a JSON list of objects")
    return tuple(data)


@dataclasses.dataclass(frozen=True)
class Settings:
    github_app_id: str | None = None
    github_private_key: str | None = dataclasses.field(default=None, repr=False)
    github_webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    public_url: str = "http://127.0.0.1:8080"
    data_dir: Path = Path("./data")
    builder: str = "local"
    registry_url: str | None = None
    image_prefix: str = "binder-prebuild/"
    kube_namespace: str = "binder-prebuild"
    repo2docker_image: str = "quay.io/jupyterhub/repo2docker:2024.07.0"
    build_timeout: int = 3600
    build_start_timeout: int = 600  # a build pod that has not started by then ends with the reason why
    max_concurrent_builds: int = 8
    container_engine: str = dataclasses.field(default_factory=default_engine)
    jupyterhub_api_url: str | None = None
    jupyterhub_api_token: str | None = dataclasses.field(default=None, repr=False)
    jupyterhub_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # behaviour switches
    build_tags: bool = False
    build_on_launch: bool = True
    launch_allow: tuple[str, ...] = ()
    launch_timeout: int = 300
    max_servers: int = 100
    max_servers_per_repo: int = 20
    launch_rate_per_minute: int = 30
    spare_hub_users: int = 20  # Hub users made ahead for repositories launched lately (0: off)
    cors_allow_origin: str | None = None  # BinderHub's cors_allow_origin: the launch API, streams, badge
    # anonymous requests and GitHub's quota: lookups per client per minute, per installation per hour
    launch_github_calls_per_minute: int = 20
    launch_github_calls_per_hour: int = 1000
    # proxies whose X-Forwarded-For / Forwarded headers name the client (IPs or CIDRs; default none)
    trusted_proxies: tuple[str, ...] = ()
    docker_config: str | None = None
    build_socket: str = "/var/run/docker.sock"
    # Kubernetes build pods: a docker config.json Secret for pushing, and resources
    build_push_secret: str | None = None
    build_cpu_request: str = "500m"
    build_cpu_limit: str = "2"
    build_memory_request: str = "1Gi"
    build_memory_limit: str = "4Gi"
    # Pre-pulling images onto the user servers' nodes (Kubernetes only; off without a namespace)
    prepull_namespace: str | None = None
    prepull_max_images: int = 20
    prepull_node_selector: tuple[tuple[str, str], ...] = ()
    prepull_tolerations: tuple[dict[str, Any], ...] = ()
    prepull_pause_image: str = "registry.k8s.io/pause:3.10"
    prepull_pull_secrets: tuple[str, ...] = ()
    prepull_launch_window: int = 86400
    # recovery after downtime (bot/recovery) and store upkeep
    redeliver_interval: float = 300.0  # seconds between scans of the App's webhook deliveries
    reconcile_interval: float = 1800.0  # seconds between reconcile rounds over every installed repository
    store_retention_days: float = 14.0  # attempts, finished deliveries, build logs (at least 3 days)

    @property
    def prepull_enabled(self) -> bool:
        return self.builder == "kubernetes" and bool(self.prepull_namespace)

    @property
    def has_app_credentials(self) -> bool:
        return bool(self.github_app_id and self.github_private_key)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "binder-prebuild.sqlite"


def _networks(value: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses or networks (checked here, parsed by the launcher)."""
    entries = tuple(x.strip() for x in value.split(",") if x.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as e:
            raise ConfigError(f"{entry!r} is not an IP address or network") from e
    return entries


_ENV_FIELDS: dict[str, tuple[str, Any]] = {
    "GITHUB_APP_ID": ("github_app_id", str),
    "GITHUB_WEBHOOK_SECRET": ("github_webhook_secret", str),
    "GITHUB_API_URL": ("github_api_url", str),
    "PUBLIC_URL": ("public_url", str),
    "DATA_DIR": ("data_dir", Path),
    "BUILDER": ("builder", str),
    "REGISTRY_URL": ("registry_url", str),
    "IMAGE_PREFIX": ("image_prefix", str),
    "KUBE_NAMESPACE": ("kube_namespace", str),
    "REPO2DOCKER_IMAGE": ("repo2docker_image", str),
    "BUILD_TIMEOUT": ("build_timeout", int),
    "BUILD_START_TIMEOUT": ("build_start_timeout", int),
    "MAX_CONCURRENT_BUILDS": ("max_concurrent_builds", int),
    "CONTAINER_ENGINE": ("container_engine", str),
    "JUPYTERHUB_API_URL": ("jupyterhub_api_url", str),
    "JUPYTERHUB_API_TOKEN": ("jupyterhub_api_token", str),
    "JUPYTERHUB_URL": ("jupyterhub_url", str),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "BUILD_TAGS": ("build_tags", _bool),
    "BUILD_ON_LAUNCH": ("build_on_launch", _bool),
    "LAUNCH_ALLOW": ("launch_allow", lambda v: tuple(x.strip() for x in v.split(",") if x.strip())),
    "LAUNCH_TIMEOUT": ("launch_timeout", int),
    "MAX_SERVERS": ("max_servers", int),
    "MAX_SERVERS_PER_REPO": ("max_servers_per_repo", int),
    "LAUNCH_RATE_PER_MINUTE": ("launch_rate_per_minute", int),
    "SPARE_HUB_USERS": ("spare_hub_users", int),
    "CORS_ALLOW_ORIGIN": ("cors_allow_origin", str),
    "LAUNCH_GITHUB_CALLS_PER_MINUTE": ("launch_github_calls_per_minute", int),
    "LAUNCH_GITHUB_CALLS_PER_HOUR": ("launch_github_calls_per_hour", int),
    "TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "DOCKER_CONFIG": ("docker_config", str),
    "BUILD_SOCKET": ("build_socket", str),
    "BUILD_PUSH_SECRET": ("build_push_secret", str),
    "BUILD_CPU_REQUEST": ("build_cpu_request", str),
    "BUILD_CPU_LIMIT": ("build_cpu_limit", str),
    "BUILD_MEMORY_REQUEST": ("build_memory_request", str),
    "BUILD_MEMORY_LIMIT": ("build_memory_limit", str),
    "PREPULL_NAMESPACE": ("prepull_namespace", str),
    "PREPULL_MAX_IMAGES": ("prepull_max_images", lambda v: _non_negative(int(v))),
    "PREPULL_NODE_SELECTOR": ("prepull_node_selector", _node_selector),
    "PREPULL_TOLERATIONS": ("prepull_tolerations", _tolerations),
    "PREPULL_PAUSE_IMAGE": ("prepull_pause_image", str),
    "PREPULL_PULL_SECRETS": ("prepull_pull_secrets", lambda v: tuple(x.strip() for x in v.split(",") if x.strip())),
    "PREPULL_LAUNCH_WINDOW": ("prepull_launch_window", lambda v: _non_negative(int(v))),
    "REDELIVER_INTERVAL": ("redeliver_interval", float),
    "RECONCILE_INTERVAL": ("reconcile_interval", float),
    "STORE_RETENTION_DAYS": ("store_retention_days", float),
}


def load_settings(env: Mapping[str, str] | None = None, config_file: str | None = None) -> Settings:
    """Build Settings from an environment mapping (default os.environ).

    A YAML config file (``config_file`` or ``BINDER_PREBUILD_CONFIG``) may add
    values, keyed by the same variable names; the environment wins.
    Stored App credentials in DATA_DIR (from the manifest flow) fill in what the
    environment leaves unset.
    """
    env = dict(os.environ if env is None else env)
    merged: dict[str, str] = {}
    path = config_file or env.get("BINDER_PREBUILD_CONFIG")
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a mapping")
        # lists and mappings (tolerations, a node selector) are given as YAML: read them as their JSON
        merged.update({str(k).upper(): json.dumps(v) if isinstance(v, (list, dict)) else str(v)
                       for k, v in data.items() if v is not None})
    merged.update({k: v for k, v in env.items() if k in _ENV_FIELDS or k.startswith("GITHUB_PRIVATE_KEY")})

    kwargs: dict[str, Any] = {}
    for var, (field, conv) in _ENV_FIELDS.items():
        if var in merged and merged[var] != "":
            try:
                kwargs[field] = conv(merged[var])
            except (ValueError, ConfigError) as e:
                raise ConfigError(f"{var}: {e}") from e

    key = merged.get("GITHUB_PRIVATE_KEY") or None
    key_path = merged.get("GITHUB_PRIVATE_KEY_PATH") or None
    if key is None and key_path:
        try:
            key = Path(key_path).read_text()
        except OSError as e:
            raise ConfigError(f"GITHUB_PRIVATE_KEY_PATH: cannot read {key_path}: {e}") from e
    if key:
        kwargs["github_private_key"] = key.replace("\\n", "\n")

    settings = Settings(**kwargs)
    if "public_url" not in kwargs:
        settings = dataclasses.replace(settings, public_url=f"http://{settings.host}:{settings.port}")
    if settings.builder not in {"kubernetes", "local"}:
        raise ConfigError(f"BUILDER must be 'kubernetes' or 'local', not {settings.builder!r}")
    if settings.prepull_namespace and settings.builder != "kubernetes":
        raise ConfigError("PREPULL_NAMESPACE is for BUILDER=kubernetes: with the local builder the image is built "
                          "where DockerSpawner starts it, so there is nothing to pull")
    return _with_stored_credentials(settings)


def _with_stored_credentials(settings: Settings) -> Settings:
    """Fill App credentials saved by the manifest flow (DATA_DIR/github-app.json)."""
    stored = load_stored_credentials(settings.data_dir)
    if not stored:
        return settings
    changes: dict[str, Any] = {}
    if not settings.github_app_id and stored.get("id"):
        changes["github_app_id"] = str(stored["id"])
    if not settings.github_private_key and stored.get("pem"):
        changes["github_private_key"] = stored["pem"]
    if not settings.github_webhook_secret and stored.get("webhook_secret"):
        changes["github_webhook_secret"] = stored["webhook_secret"]
    return dataclasses.replace(settings, **changes) if changes else settings


# Where the manifest flow (bot/github/manifest.py) leaves the App's credentials in DATA_DIR.
CREDENTIALS_FILE = "github-app.json"
KEY_FILE = "github-app.pem"


def load_stored_credentials(data_dir: Path | str) -> dict[str, Any] | None:
    """The App saved by the manifest flow (with ``pem`` read from its key file), or None.

    A file that exists but cannot be read is a configuration error, not a silent None.
    """
    path = Path(data_dir) / CREDENTIALS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if not data.get("pem"):
            key_path = Path(data_dir) / str(data.get("private_key_path") or KEY_FILE)
            data["pem"] = key_path.read_text()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the stored GitHub App credentials in {path}: {e}") from e
    return data
