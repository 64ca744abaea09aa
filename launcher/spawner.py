"""Hub side: a spawner mixin that starts binder-prebuild's images, and nothing else.

Use it in front of a container spawner::

    class BinderKubeSpawner(BinderSpawnerMixin, KubeSpawner): ...
    class BinderDockerSpawner(BinderSpawnerMixin, DockerSpawner): ...

What it does with the launcher's ``user_options`` (``image``, ``token``, ``repo_url``,
``ref`` and BinderHub's ``binder_*`` keys):

* ``image`` is used only when it is one of our image names under the configured
  prefix (registry host included, as binder-prebuild pushes them); anything else
  is refused with a 400, so nobody launches an arbitrary image through the Hub.
* ``token`` becomes the server's API token (``Spawner.api_token``, hence
  ``JUPYTERHUB_API_TOKEN``): after ``start`` JupyterHub registers a token the
  spawner brought as that server's token, owned by the user with the server's
  scopes, so ``/user/<name>/?token=<token>`` authenticates the visitor as the
  (temporary) user. JupyterHub 5 and later only read ``?token=`` when the server
  has ``JUPYTERHUB_ALLOW_TOKEN_IN_URL=1``, which the mixin sets.
* ``BINDER_REPO_URL``, ``BINDER_REF_URL``, ``BINDER_LAUNCH_HOST``,
  ``BINDER_PERSISTENT_REQUEST``, ``BINDER_REQUEST`` are set as BinderHub sets them.
* ``cors_allow_origin`` (default: the Hub's ``CORS_ALLOW_ORIGIN``) makes the server accept
  that origin (``--ServerApp.allow_origin``), as BinderHub's mixin does, so a page on
  another site (thebe) can start kernels and open their websockets.

This file only imports JupyterHub's own dependencies: the Zero to JupyterHub
values (k8s/jupyterhub-values.yaml) embed it verbatim in the hub pod.
"""
from __future__ import annotations

import os
import re

from tornado import web
from traitlets import Unicode, default
from traitlets.config import Configurable

# the launcher's scopes on the Hub: create/delete users (admin:users), start/stop/read servers (servers)
SERVICE_SCOPES = ["admin:users", "servers"]

# after the prefix: one image-name component and a tag, nothing that could leave the prefix
# (always used with fullmatch: a "$" would let a trailing newline through)
_NAME_REST = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,256}")
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
DEFAULT_IMAGE_PREFIX = "binder-prebuild/"
_BINDER_KEYS = ("binder_ref_url", "binder_launch_host", "binder_persistent_request", "binder_request")


class OptionsRefused(ValueError):
    """user_options the Hub will not start."""


def names_registry(first: str) -> bool:
    """Docker's rule: a first path component with a dot or a port, or ``localhost``, is a registry host."""
    return "." in first or ":" in first or first == "localhost"


def effective_prefix(image_prefix: str, registry_url: str | None) -> str:
    """The prefix every image name starts with: registry host + IMAGE_PREFIX, lowercased.

    The one implementation: the launcher names images with it (bot/images.py imports it
    from here) and the Hub checks them against it, so the two cannot disagree. With a
    registry, an IMAGE_PREFIX that does not already name a registry host gets the
    registry's host:port in front, so names (and their length limit) match a BinderHub
    whose ``image_prefix`` is ``host:port/IMAGE_PREFIX``; one that names a host
    (``localhost:5000/binder-``, as BinderHub's own ``image_prefix`` does) is used as it
    is. Docker Hub names carry no host. ``_`` -> ``-`` and lowercased, as BinderHub does to
    the whole name, so every image name starts with exactly this.
    """
    image_prefix = image_prefix.strip()
    registry = (registry_url or "").strip()
    if registry:
        host = registry.split("://", 1)[-1].split("/", 1)[0]
        first, sep, _ = image_prefix.partition("/")
        if host.lower() not in DOCKER_HUB_HOSTS and not (sep and names_registry(first)):
            image_prefix = f"{host}/{image_prefix}"
    return image_prefix.replace("_", "-").lower()


def prefix_from_env(env: dict[str, str] | None = None) -> str:
    """IMAGE_PREFIX with REGISTRY_URL's host in front, as binder-prebuild names its images."""
    env = dict(os.environ if env is None else env)
    return effective_prefix(env.get("IMAGE_PREFIX") or DEFAULT_IMAGE_PREFIX, env.get("REGISTRY_URL"))


def check_image(image: object, prefix: str) -> str:
    """The image, if it is one of ours under ``prefix``; else OptionsRefused saying why."""
    if not prefix:
        raise OptionsRefused("no image prefix is configured (BinderSpawnerMixin.image_prefix), "
                             "so no image may be launched")
    if not isinstance(image, str) or not image:
        raise OptionsRefused("user_options must name an image")
    prefix = prefix.replace("_", "-").lower()  # as image names are (BinderHub's rule), so is an operator's prefix
    if not image.startswith(prefix) or not _NAME_REST.fullmatch(image[len(prefix):]):
        raise OptionsRefused(f"image {image[:200]!r} is not allowed: only images under {prefix!r} are launched")
    return image


def check_options(options: object, prefix: str) -> dict[str, str]:
    """Validate the launcher's user_options; returns the ones the spawner uses."""
    if not isinstance(options, dict):
        raise OptionsRefused("user_options must be an object")
    out = {"image": check_image(options.get("image"), prefix)}
    token = options.get("token")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise OptionsRefused("user_options must carry a launch token (32 to 256 URL-safe characters)")
    out["token"] = token
    for key in ("repo_url", "ref") + _BINDER_KEYS:
        value = options.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 2048 or any(c in value for c in "\r\n\0"):
            raise OptionsRefused(f"user_options[{key!r}] must be a short single-line string")
        out[key] = value
    return out


def origin_args(origin: str) -> list[str]:
    """The single-user server's arguments for a cross-origin client such as thebe."""
    if not origin:
        return []
    args = [f"--ServerApp.allow_origin={origin}"]
    if origin == "*":  # allow_origin=* alone does not cover every handler (files); BinderHub adds the pattern
        args.append("--ServerApp.allow_origin_pat=.*")
    return args


def binder_env(options: dict[str, str]) -> dict[str, str]:
    """BinderHub's environment variables for the single-user server."""
    env = {"JUPYTERHUB_ALLOW_TOKEN_IN_URL": "1"}
    if "repo_url" in options:
        env["BINDER_REPO_URL"] = options["repo_url"]
    for key in _BINDER_KEYS:
        if key in options:
            env[key.upper()] = options[key]
    return env


class BinderSpawnerMixin(Configurable):
    """Put first in the bases: ``class S(BinderSpawnerMixin, KubeSpawner)``."""

    image_prefix = Unicode(
        help="""Only images whose names start with this are started (registry host included,
        e.g. ``registry.example.org/binder-prebuild/``). Default: IMAGE_PREFIX with
        REGISTRY_URL's host in front, from the Hub's environment.""",
    ).tag(config=True)

    cors_allow_origin = Unicode(
        help="""Origins (``*`` or one origin) whose pages may use the servers' API and kernels, as
        BinderHub's ``cors_allow_origin``. Default: the Hub's CORS_ALLOW_ORIGIN environment variable,
        the same setting binder-prebuild reads for its launch API.""",
    ).tag(config=True)

    @default("image_prefix")
    def _default_prefix(self) -> str:
        return prefix_from_env()

    @default("cors_allow_origin")
    def _default_cors(self) -> str:
        return os.environ.get("CORS_ALLOW_ORIGIN", "").strip()

    def get_args(self):  # type: ignore[override]
        return [*super().get_args(), *origin_args(self.cors_allow_origin)]

    def _binder_options(self) -> dict[str, str]:
        try:
            return check_options(self.user_options or {}, self.image_prefix)
        except OptionsRefused as e:
            self.log.warning("refusing to start %s: %s", getattr(self, "_log_name", "server"), e)
            raise web.HTTPError(400, f"binder-prebuild: {e}") from e

    def apply_binder_options(self) -> dict[str, str]:
        """Check the launch's user_options and take its image and token (or refuse with a 400)."""
        options = self._binder_options()
        self.image = options["image"]
        # our token becomes the server's token; the Hub records it once start returns
        self.api_token = options["token"]
        return options

    async def start(self):  # type: ignore[override]
        self.apply_binder_options()
        return await super().start()

    async def check_allowed(self, image: str) -> str:
        """DockerSpawner asks this of user_options' image: the prefix rule decides."""
        try:
            return check_image(image, self.image_prefix)
        except OptionsRefused as e:
            raise web.HTTPError(400, f"binder-prebuild: {e}") from e

    def get_env(self):  # type: ignore[override]
        env = super().get_env()
        try:
            options = check_options(self.user_options or {}, self.image_prefix)
        except OptionsRefused:
            return env
        env.update(binder_env(options))
        return env
