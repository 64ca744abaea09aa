"""A repo2docker container engine that drives the plain ``podman`` CLI.

repo2docker 2026.x builds with ``<cli> buildx build [--push]``; Debian 12's
podman 4.3 has neither ``buildx version`` nor ``buildx build --push``.  This
engine builds with ``podman build`` and pushes with ``podman push``.

Registered for repo2docker as the ``podman`` engine through the entry point::

    [project.entry-points."repo2docker.engines"]
    podman = "bot.builders.podman_engine:PodmanEngine"

and selected with ``Repo2Docker.engine = "podman"`` (CLI: ``--engine podman``).

What it translates from repo2docker's ``build()`` call:

* ``buildargs`` -> ``--build-arg``, ``labels`` -> ``--label``, ``platform`` ->
  ``--platform``, ``dockerfile`` -> ``--file`` (relative to the context),
  ``container_limits`` -> ``--memory``/``--memory-swap``/``--cpuset-cpus``/``--cpu-shares``,
  ``fileobj`` (a tar build context) is unpacked to a temporary directory.
* ``cache_from``: buildah's ``--cache-from`` takes a *repository* holding layer-cache
  images (tags are cache keys), not an image; the tag/digest is stripped.  With
  ``layer_cache`` on (default: podman >= 4.4) and ``push=True`` the engine also
  passes ``--cache-to`` so later builds on an empty builder storage can reuse the
  layers.  On podman 4.3 the remote cache misses from the first ARG step on
  (buildah#4315), so there it is off and only the local layer cache counts.
* ``push=True`` -> ``podman push`` after a successful build (``--tls-verify=false``
  for loopback registries unless ``tls_verify`` says otherwise).
* ``load`` is implicit: podman always keeps the image in local storage.

Host trust for the build's network access (``ca_bundle``, default ``$PIP_CERT``):
the bundle is bind-mounted read-only at ``/etc/ssl/certs/ca-certificates.crt``
during RUN steps and a generated ``pip.conf`` (``cert = ...`` and, if set,
``index-url``) at ``/etc/pip.conf``: pip behaves as with ``PIP_CERT`` but nothing
is baked into the image config (buildah leaves empty mount-point files behind).

Logs are yielded as text lines (``string_output = True``); a failing build raises
``BuildError`` and a failing push ``ImageLoadError``.

Cancelling: ``PodmanEngine.cancel_build(tag)`` (any thread; the thread running
repo2docker then gets ``BuildCancelled``), closing the ``build()`` generator, or a
KeyboardInterrupt/SIGINT in the repo2docker process all terminate podman (which
runs in its own session) and remove what an interrupted buildah leaves behind: the
RUN step's runc container (which otherwise runs on), its /var/tmp/buildahNNN
bundle and the build's working containers.  Intermediate images stay (they are
the layer cache).  A SIGKILLed repo2docker process leaves podman building.

Each build carries ``--build-arg R2D_PODMAN_BUILD_ID=<random id>``: buildah keeps
it in every working container it makes for that build, so the cleanup removes
this build's containers and never those of a concurrent build FROM the same
image (an undeclared arg touches no image, RUN step or cache key).  While
``build()`` runs in the main thread, the first SIGINT/SIGTERM stops it and later
ones wait until the cleanup is done (``podman_leftovers.SignalGuard``): the
parent-death signal comes once per exiting thread, and Ctrl-C is pressed twice.

Layout: this module holds the options and the ``build()`` flow;
``podman_args`` decides the command lines (pure), ``podman_process`` runs,
streams and stops podman, ``podman_leftovers`` finds what an interrupted build
left and guards signals.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tarfile
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from repo2docker.docker import DockerEngine
from repo2docker.engine import BuildError, Image, ImageLoadError
from traitlets import Bool, Dict, Float, List, Unicode, default

from bot.builders import podman_process
from bot.builders.podman_args import (
    BuildSpec, build_command, build_tls_verify, cache_plan, cache_repository_of, dockerfile_base_images,
    is_loopback_registry, login_command, pip_conf_text, push_command, registry_host,
)
from bot.builders.podman_leftovers import NoSignalGuard, SignalGuard
from bot.builders.podman_process import BuildCancelled, Podman

__all__ = [  # the helpers live in podman_args / podman_process; re-exported for callers of this module
    "BuildCancelled",
    "PodmanEngine",
    "cache_repository_of",
    "dockerfile_base_images",
    "is_loopback_registry",
    "registry_host",
]


# ---------------------------------------------------------------- the engine
class PodmanEngine(DockerEngine):
    """repo2docker engine: ``podman build`` + ``podman push`` (podman >= 4.2)."""

    string_output = True

    podman_command = List(
        Unicode(),
        ["podman"],
        config=True,
        help="Command prefix for the podman CLI, e.g. ['podman', '--root', '/x'].",
    )

    podman_env = Dict(
        {},
        config=True,
        help="Extra environment for podman subprocesses (e.g. CONTAINERS_CONF, "
        "CONTAINERS_REGISTRIES_CONF); merged over os.environ.",
    )

    image_format = Unicode(
        "docker",
        config=True,
        help="--format for podman build: 'docker' (keeps SHELL, HEALTHCHECK, ONBUILD "
        "which repo2docker Dockerfiles may use; pushes Docker v2 schema 2) or 'oci'.",
    )

    network = Unicode("", config=True, help="--network for RUN steps ('' = podman default, 'host').")

    pull = Unicode("", config=True, help="--pull policy for base images ('' = podman default).")

    tls_verify = Bool(
        None,
        allow_none=True,
        config=True,
        help="TLS verification for registries. None (auto): off when pushing to a "
        "loopback registry, and for the build when its cache repository and all FROM "
        "images are local or loopback; otherwise left to registries.conf.",
    )

    ca_bundle = Unicode(
        config=True,
        help="Host CA bundle exposed to RUN steps at /etc/ssl/certs/ca-certificates.crt, "
        "with a pip.conf (cert=) at /etc/pip.conf. Default: $PIP_CERT. '' disables.",
    )

    @default("ca_bundle")
    def _ca_bundle_default(self):
        return os.environ.get("PIP_CERT", "")

    pip_index_url = Unicode(
        config=True,
        help="index-url written into the build's pip.conf (default: $PIP_INDEX_URL; '' = pip's default).",
    )

    @default("pip_index_url")
    def _pip_index_url_default(self):
        return os.environ.get("PIP_INDEX_URL", "")

    pip_conf = Unicode(
        "",
        config=True,
        help="A pip.conf to mount at /etc/pip.conf during RUN steps instead of the generated one.",
    )

    build_volumes = List(
        Unicode(),
        [],
        config=True,
        help="Extra 'src:dst[:opts]' bind mounts for RUN steps (podman build -v).",
    )

    build_env = Dict(
        {},
        config=True,
        help="podman build --env KEY=VALUE (note: these persist in the image config).",
    )

    layer_cache = Bool(
        None,
        allow_none=True,
        config=True,
        help="Use the registry as buildah's remote layer cache: --cache-from the cache "
        "repository and, when pushing, --cache-to it. None (auto): on for podman >= 4.4. "
        "podman 4.3 (buildah 1.28) never pulls the cache of a step that adds no layer "
        "(ARG, ENV, ...), so a Dockerfile starting with ARG NB_USER gets no remote hits "
        "(buildah#4315, fixed by buildah#4326), while every step's cache is still pushed. "
        "When off, repo2docker's cache_from is still passed as --cache-from (tag stripped).",
    )

    cache_repository = Unicode(
        "",
        config=True,
        help="Layer-cache repository (no tag). '{repository}' is replaced with the "
        "output image's repository. '' = the repository of the first cache_from "
        "entry, or (when pushing) of the output image.",
    )

    extra_podman_build_args = List(
        Unicode(), [], config=True, help="Extra arguments for podman build, placed before the context path."
    )

    extra_push_args = List(Unicode(), [], config=True, help="Extra arguments for podman push.")

    push_retries = List(
        Float(),
        [],
        config=True,
        help="Back-off delays (seconds) between extra podman push attempts "
        "(podman push itself already retries 3 times with 1 s back-off).",
    )

    terminate_timeout = Float(10.0, config=True, help="Seconds between SIGTERM and SIGKILL on cancel.")

    handle_signals = Bool(
        True,
        config=True,
        help="When build() runs in the main thread: the first SIGINT/SIGTERM stops the "
        "build and later ones wait until its cleanup is done. When repo2docker also runs "
        "single-threaded (the CLI, or a build subprocess): turn SIGTERM into BuildCancelled "
        "(so killing repo2docker cleans up like Ctrl-C) and give podman "
        "PR_SET_PDEATHSIG=SIGTERM (so a SIGKILLed repo2docker does not leave podman "
        "building and pushing).",
    )

    def __init__(self, *, parent=None, **traits):
        """``parent``: repo2docker's app (its config applies); ``traits`` set options directly."""
        super().__init__(parent=parent)
        for name, value in traits.items():
            if not self.has_trait(name):
                raise TypeError(f"PodmanEngine has no option {name!r}")
            setattr(self, name, value)

    # -- plumbing ------------------------------------------------------------
    @property
    def container_cli(self):
        # no `buildx version` probe: podman 4.3 has no buildx
        return self.podman_command[0]

    def _cli(self) -> Podman:
        """The podman CLI as configured now (options may change between builds)."""
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.podman_env.items()})
        return Podman(self.podman_command, env, terminate_timeout=self.terminate_timeout, logger=self.log)

    # -- repo2docker API -------------------------------------------------------
    def inspect_image(self, image):
        cli = self._cli()
        proc = cli.run_quiet(cli.cmd("image", "inspect", image))
        if proc.returncode != 0:
            return None
        info = json.loads(proc.stdout.decode())[0]
        tags = [t.removeprefix("localhost/") for t in (info.get("RepoTags") or [])]
        config = dict(info.get("Config") or {})
        config.setdefault("WorkingDir", "")
        return Image(tags=tags, config=config)

    def build(
        self,
        *,
        push=False,
        load=False,
        buildargs=None,
        cache_from=None,
        container_limits=None,
        tag="",
        custom_context=False,
        dockerfile="",
        fileobj=None,
        path="",
        labels=None,
        platform=None,
        **kwargs,
    ):
        if push and not tag:
            raise ValueError("push=True needs a tag")
        with ExitStack() as stack:
            guard = self._signal_guard()
            stack.callback(guard.uninstall)  # registered first: runs after every other exit
            guard.install()
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="r2d-podman-")))
            if fileobj is not None:
                context = work / "context"
                context.mkdir()
                with tarfile.open(fileobj=fileobj) as tarf:
                    try:
                        tarf.extractall(context, filter="fully_trusted")
                    except TypeError:  # Python without tarfile filters
                        tarf.extractall(context)
            else:
                context = Path(path or ".").resolve()
            dockerfile_path = Path(dockerfile) if dockerfile else context / "Dockerfile"
            if not dockerfile_path.is_absolute():
                # repo2docker passes it relative to the context (its cwd)
                dockerfile_path = context / dockerfile_path

            cli = self._cli()
            authfile = self._login(cli, work) if self.registry_credentials else None
            layer_cache = self.layer_cache if self.layer_cache is not None else self.podman_version() >= (4, 4)
            cache_repo, cache_to = cache_plan(tag, cache_from or [], push, layer_cache=layer_cache,
                                              cache_repository=self.cache_repository)
            build_id = secrets.token_hex(8)
            spec = BuildSpec(
                build_id=build_id,
                context=str(context),
                dockerfile=str(dockerfile_path),
                iidfile=str(work / "iid"),
                image_format=self.image_format,
                tag=tag,
                buildargs=buildargs or {},
                labels=labels or {},
                platform=platform,
                network=self.network,
                pull=self.pull,
                limits=container_limits or {},
                ca_bundle=self._ca_bundle_path(),
                pip_conf=self._pip_conf(work),
                volumes=list(self.build_volumes),
                env=dict(self.build_env),
                cache_repo=cache_repo,
                cache_to=cache_to,
                tls_verify=build_tls_verify(self.tls_verify, cache_repo, _base_images(dockerfile_path)),
                authfile=authfile,
                extra=list(self.extra_podman_build_args),
            )
            args = build_command(self.podman_command, spec)
            self.log.debug("podman build: %s", args)
            yield f"Building with: {' '.join(args)}\n"
            guard.resumed()
            yield from cli.stream(args, BuildError, key=tag, guard=guard, build_id=build_id,
                                  pdeathsig=self._owns_process())
            if push:
                yield from self._push(cli, tag, work, authfile, guard)

    # -- build helpers ---------------------------------------------------------
    _podman_version: tuple[int, ...] | None = None

    def podman_version(self) -> tuple[int, ...]:
        if self._podman_version is None:
            cli = self._cli()
            proc = cli.run_quiet(cli.cmd("version", "--format", "{{.Client.Version}}"))
            m = re.match(r"(\d+)\.(\d+)", proc.stdout.decode().strip()) if proc.returncode == 0 else None
            if not m:
                raise BuildError(f"cannot run {self.podman_command[0]}: {proc.stderr.decode(errors='replace')}")
            self._podman_version = (int(m.group(1)), int(m.group(2)))
        return self._podman_version

    def _ca_bundle_path(self) -> str:
        if not self.ca_bundle:
            return ""
        if not os.path.isfile(self.ca_bundle):
            raise BuildError(f"ca_bundle {self.ca_bundle} does not exist")
        return os.path.realpath(self.ca_bundle)

    def _pip_conf(self, work: Path) -> str | None:
        if self.pip_conf:
            return self.pip_conf
        if not self.ca_bundle:
            return None
        conf = work / "pip.conf"
        conf.write_text(pip_conf_text(self.pip_index_url))
        conf.chmod(0o644)
        return str(conf)

    def _login(self, cli: Podman, work: Path) -> str:
        creds = self.registry_credentials
        authfile = str(work / "auth.json")
        args = login_command(self.podman_command, creds["registry"], creds["username"], authfile=authfile,
                             tls_verify=self.tls_verify)
        proc = cli.run_quiet(args, input=creds["password"].encode())
        if proc.returncode != 0:
            raise ImageLoadError(f"podman login failed: {proc.stderr.decode(errors='replace').strip()}")
        return authfile

    # -- the push step -----------------------------------------------------------
    def _push(self, cli: Podman, tag: str, work: Path, authfile: str | None, guard: SignalGuard):
        digestfile = work / "digest"
        args = push_command(self.podman_command, tag, tls_verify=self.tls_verify, authfile=authfile,
                            digestfile=str(digestfile), extra=self.extra_push_args)
        delays = list(self.push_retries)
        attempt = 0
        while True:
            attempt += 1
            yield f"Pushing image {tag}\n"
            guard.resumed()
            try:
                yield from cli.stream(args, ImageLoadError, key=tag, guard=guard, pdeathsig=self._owns_process())
                break
            except BuildCancelled:
                raise
            except ImageLoadError as e:
                if not delays:
                    raise
                delay = delays.pop(0)
                yield f"Push attempt {attempt} failed: {str(e).splitlines()[-1]}; retrying in {delay:g} s\n"
                time.sleep(delay)
        if digestfile.exists():
            yield f"Pushed {tag}@{digestfile.read_text().strip()}\n"

    # -- process handling ------------------------------------------------------
    def _owns_process(self) -> bool:
        return (
            self.handle_signals
            and threading.current_thread() is threading.main_thread()
            and threading.active_count() == 1
        )

    def _signal_guard(self) -> SignalGuard:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return NoSignalGuard()
        return SignalGuard(
            lambda: BuildCancelled("repo2docker received SIGTERM"), sigterm_stops=self._owns_process(), logger=self.log
        )

    @classmethod
    def cancel_build(cls, tag: str) -> bool:
        """Stop the running podman build/push of ``tag`` from any thread.

        The thread iterating ``build()`` then removes the build's working containers
        and raises ``BuildCancelled``.  Returns False if nothing was running.
        """
        return podman_process.cancel(tag)

    def build_containers(self, build_id: str) -> list[str]:
        """Ids of the buildah working containers that exist for one build (its ``R2D_PODMAN_BUILD_ID``)."""
        return self._cli().build_containers(build_id)


def _base_images(dockerfile: Path) -> list[str] | None:
    try:
        return dockerfile_base_images(dockerfile.read_text(errors="replace"))
    except OSError:
        return None
