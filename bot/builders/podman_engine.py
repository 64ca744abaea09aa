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
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from repo2docker.docker import DockerEngine
from repo2docker.engine import BuildError, Image, ImageLoadError
from traitlets import Bool, Dict, Float, List, Unicode, default

from bot.builders.podman_leftovers import (
    BUILD_ID_ARG, STORE_FORMAT, NoSignalGuard, SignalGuard, builder_args, containers_of_build, parse_store,
    remove_runc_containers, runc_containers_under, without_build_id_warning,
)

__all__ = [
    "BuildCancelled",
    "PodmanEngine",
    "cache_repository_of",
    "dockerfile_base_images",
    "is_loopback_registry",
    "registry_host",
]

CONTAINER_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"


# ---------------------------------------------------------------- pure helpers
def _split_reference(ref: str) -> tuple[str | None, str]:
    """('registry host' or None, rest) for an image reference."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return None, ref


def registry_host(ref: str) -> str:
    """The registry host[:port] an image reference points at (``docker.io`` if none)."""
    host, _ = _split_reference(ref)
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
    host, rest = _split_reference(ref)
    rest = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return f"{host}/{rest}" if host else rest


_FROM_RE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)


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


class _LineSplitter:
    """Split a byte stream into text lines on ``\\n`` or a bare ``\\r`` (like repo2docker)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines = []
        while True:
            m = re.search(rb"\r\n|\n|\r(?=.)", self._buf, re.DOTALL)
            if not m:
                break
            lines.append(self._buf[: m.end()].decode("utf-8", "replace"))
            self._buf = self._buf[m.end() :]
        return lines

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class BuildCancelled(BuildError):
    """The build was stopped by ``PodmanEngine.cancel_build``."""


class _Running:
    """One podman build/push process and what its cleanup needs."""

    def __init__(self, engine: PodmanEngine, proc: subprocess.Popen, build_id: str | None) -> None:
        self.engine = engine
        self.proc = proc
        self.build_id = build_id  # None: a push (nothing but the process to stop)
        self.cancelled = False
        self.terminated = False
        self.lock = threading.Lock()


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

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.podman_env.items()})
        return env

    def _podman(self, *args: str) -> list[str]:
        return [*self.podman_command, *args]

    def _run_quiet(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, env=self._env(), **kw)

    # -- repo2docker API -------------------------------------------------------
    def inspect_image(self, image):
        proc = self._run_quiet(self._podman("image", "inspect", image))
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

            authfile = self._login(work) if self.registry_credentials else None
            cache_repo, cache_to = self._cache_repo(tag, cache_from or [], push)
            build_id = secrets.token_hex(8)
            args = self._build_args(
                work=work,
                context=context,
                dockerfile=dockerfile_path,
                tag=tag,
                buildargs=buildargs or {},
                labels=labels or {},
                platform=platform,
                limits=container_limits or {},
                cache_repo=cache_repo,
                cache_to=cache_to,
                authfile=authfile,
                build_id=build_id,
            )
            self.log.debug("podman build: %s", args)
            yield f"Building with: {' '.join(args)}\n"
            guard.resumed()
            yield from self._stream(args, BuildError, key=tag, guard=guard, build_id=build_id)
            if push:
                yield from self._push(tag, work, authfile, guard)

    # -- build helpers ---------------------------------------------------------
    _podman_version: tuple[int, ...] | None = None

    def podman_version(self) -> tuple[int, ...]:
        if self._podman_version is None:
            proc = self._run_quiet(self._podman("version", "--format", "{{.Client.Version}}"))
            m = re.match(r"(\d+)\.(\d+)", proc.stdout.decode().strip()) if proc.returncode == 0 else None
            if not m:
                raise BuildError(f"cannot run {self.podman_command[0]}: {proc.stderr.decode(errors='replace')}")
            self._podman_version = (int(m.group(1)), int(m.group(2)))
        return self._podman_version

    def _layer_cache_on(self) -> bool:
        if self.layer_cache is not None:
            return self.layer_cache
        return self.podman_version() >= (4, 4)

    def _cache_repo(self, tag: str, cache_from: list[str], push: bool) -> tuple[str | None, bool]:
        """(repository for --cache-from, whether to --cache-to it as well)."""
        if not self._layer_cache_on():
            return (cache_repository_of(cache_from[0]) if cache_from else None), False
        repo = cache_repository_of(tag) if tag else ""
        if self.cache_repository:
            cache = self.cache_repository.replace("{repository}", repo)
        elif cache_from:
            cache = cache_repository_of(cache_from[0])
        else:
            cache = repo or None
        return cache, bool(push and cache)

    def _build_tls_verify(self, dockerfile: Path, cache_repo: str | None) -> bool | None:
        if self.tls_verify is not None:
            return self.tls_verify
        if not cache_repo or not is_loopback_registry(cache_repo):
            return None
        try:
            bases = dockerfile_base_images(dockerfile.read_text(errors="replace"))
        except OSError:
            return None
        for image in bases:
            if "$" in image:
                return None
            host, _ = _split_reference(image)
            if host is None or not (host == "localhost" or is_loopback_registry(host)):
                return None
        return False

    def _pip_conf(self, work: Path) -> str | None:
        if self.pip_conf:
            return self.pip_conf
        if not self.ca_bundle:
            return None
        lines = ["[global]", f"cert = {CONTAINER_CA_PATH}"]
        if self.pip_index_url:
            lines.append(f"index-url = {self.pip_index_url}")
        conf = work / "pip.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o644)
        return str(conf)

    def _build_args(
        self, *, work, context, dockerfile, tag, buildargs, labels, platform, limits, cache_repo, cache_to, authfile,
        build_id,
    ) -> list[str]:
        a = self._podman("build", "--layers", "--force-rm", f"--format={self.image_format}")
        # names this build's working containers; early in the logged line (long lines are cut)
        a += ["--build-arg", f"{BUILD_ID_ARG}={build_id}"]
        a += ["--file", str(dockerfile)]
        if tag:
            a += ["--tag", tag]
        for k, v in buildargs.items():
            a += ["--build-arg", f"{k}={v}"]
        for k, v in labels.items():
            a += ["--label", f"{k}={v}"]
        if platform:
            a += ["--platform", platform]
        if self.network:
            a += ["--network", self.network]
        if self.pull:
            a += [f"--pull={self.pull}"]
        if limits.get("memory"):
            a += ["--memory", str(limits["memory"])]
        if limits.get("memswap"):
            a += ["--memory-swap", str(limits["memswap"])]
        if limits.get("cpusetcpus"):
            a += ["--cpuset-cpus", str(limits["cpusetcpus"])]
        if limits.get("cpushares"):
            a += ["--cpu-shares", str(limits["cpushares"])]
        if self.ca_bundle:
            if not os.path.isfile(self.ca_bundle):
                raise BuildError(f"ca_bundle {self.ca_bundle} does not exist")
            a += ["--volume", f"{os.path.realpath(self.ca_bundle)}:{CONTAINER_CA_PATH}:ro"]
        pip_conf = self._pip_conf(work)
        if pip_conf:
            a += ["--volume", f"{pip_conf}:/etc/pip.conf:ro"]
        for v in self.build_volumes:
            a += ["--volume", v]
        for k, v in self.build_env.items():
            a += ["--env", f"{k}={v}"]
        if cache_repo:
            a += ["--cache-from", cache_repo]  # podman 4.3 takes one repository
            if cache_to:
                a += ["--cache-to", cache_repo]
        verify = self._build_tls_verify(dockerfile, cache_repo)
        if verify is not None:
            a += [f"--tls-verify={'true' if verify else 'false'}"]
        if authfile:
            a += ["--authfile", authfile]
        a += ["--iidfile", str(work / "iid")]
        a += list(self.extra_podman_build_args)
        a.append(str(context))
        return a

    def _login(self, work: Path) -> str:
        creds = self.registry_credentials
        authfile = str(work / "auth.json")
        args = self._podman("login", "--authfile", authfile, "--username", creds["username"], "--password-stdin")
        if self.tls_verify is False or (self.tls_verify is None and is_loopback_registry(creds["registry"])):
            args.append("--tls-verify=false")
        args.append(creds["registry"].split("://", 1)[-1].rstrip("/"))
        proc = self._run_quiet(args, input=creds["password"].encode())
        if proc.returncode != 0:
            raise ImageLoadError(f"podman login failed: {proc.stderr.decode(errors='replace').strip()}")
        return authfile

    def _push(self, tag: str, work: Path, authfile: str | None, guard: SignalGuard):
        args = self._podman("push")
        verify = self.tls_verify
        if verify is None and is_loopback_registry(tag):
            verify = False
        if verify is not None:
            args.append(f"--tls-verify={'true' if verify else 'false'}")
        if authfile:
            args += ["--authfile", authfile]
        digestfile = work / "digest"
        args += ["--digestfile", str(digestfile), *self.extra_push_args, tag]
        delays = list(self.push_retries)
        attempt = 0
        while True:
            attempt += 1
            yield f"Pushing image {tag}\n"
            guard.resumed()
            try:
                yield from self._stream(args, ImageLoadError, key=tag, guard=guard)
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

    @staticmethod
    def _set_pdeathsig():  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    _active: dict[str, list[_Running]] = {}
    _active_lock = threading.Lock()

    @classmethod
    def cancel_build(cls, tag: str) -> bool:
        """Stop the running podman build/push of ``tag`` from any thread.

        The thread iterating ``build()`` then removes the build's working containers
        and raises ``BuildCancelled``.  Returns False if nothing was running.
        """
        with cls._active_lock:
            runs = list(cls._active.get(tag, []))
        for run in runs:
            run.cancelled = True
            run.engine._terminate(run)
        return bool(runs)

    def _stream(self, args: list[str], error_cls, *, key: str, guard: SignalGuard, build_id: str | None = None):
        """Run ``args``, yield its merged output line by line, raise error_cls on failure.

        With a ``build_id`` (a build, not a push) an interrupted run's leftovers are removed.
        """
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env(),
            # own session: a Ctrl-C / SIGINT meant for repo2docker reaches Python
            # (KeyboardInterrupt -> cleanup below), not podman directly
            start_new_session=True,
            bufsize=0,
            preexec_fn=self._set_pdeathsig if self._owns_process() else None,
        )
        run = _Running(self, proc, build_id)
        with self._active_lock:
            self._active.setdefault(key, []).append(run)
        splitter = _LineSplitter()
        tail: list[str] = []
        done = False
        try:
            fd = proc.stdout.fileno()
            while True:
                data = os.read(fd, 65536)
                lines = splitter.feed(data) if data else splitter.flush()
                for line in lines:
                    if build_id:
                        line = without_build_id_warning(line)
                        if line is None:
                            continue
                    tail = (tail + [line.rstrip()])[-20:]
                    yield line
                    guard.resumed()
                if not data:
                    break
            rc = proc.wait()
            done = not run.cancelled
            if run.cancelled:
                raise BuildCancelled(f"{' '.join(args[:2])} cancelled")
            if rc != 0:
                detail = "\n".join(t for t in tail if t)[-2000:]
                raise error_cls(f"{' '.join(args[:2])} exited with {rc}:\n{detail}")
        finally:
            guard.holding += 1  # first thing: SIGINT/SIGTERM wait until this cleanup is done
            try:
                if not done:  # cancelled, consumer went away (generator closed), or an exception
                    self._terminate(run)
                    self._cleanup_after(run)
                if proc.stdout:
                    proc.stdout.close()
                with self._active_lock:
                    runs = self._active.get(key, [])
                    if run in runs:
                        runs.remove(run)
                    if not runs:
                        self._active.pop(key, None)
            finally:
                guard.release()

    def _terminate(self, run: _Running) -> None:
        """Stop a podman process and the RUN-step container it leaves running."""
        with run.lock:
            if run.terminated:
                return
            run.terminated = True
            proc = run.proc
            runc_ids, bundles = runc_containers_under(proc.pid) if run.build_id else ([], set())
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(self.terminate_timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
            try:
                remove_runc_containers(runc_ids, self.log)
                for bundle in bundles:  # a RUN step podman was just setting up or tearing down
                    shutil.rmtree(bundle, ignore_errors=True)
            except Exception as e:  # best effort: never mask the cancellation
                self.log.warning("podman build cleanup incomplete: %s\n", e)

    def _cleanup_after(self, run: _Running) -> None:
        """Remove the working containers of this build (and only this build: see BUILD_ID_ARG)."""
        if not run.build_id:
            return
        try:
            doomed = self.build_containers(run.build_id)
            if doomed:
                self._run_quiet(self._podman("rm", "--force", *doomed))
                self.log.info("removed %d buildah working container(s)\n", len(doomed))
        except Exception as e:
            self.log.warning("podman build cleanup incomplete: %s\n", e)

    _storage: tuple[str, str] | None = None

    def build_containers(self, build_id: str) -> list[str]:
        """Ids of the buildah working containers that exist for one build (its ``R2D_PODMAN_BUILD_ID``)."""
        if self._storage is None:
            info = self._run_quiet(self._podman("info", "--format", STORE_FORMAT))
            store = parse_store(info.stdout.decode()) if info.returncode == 0 else None
            if store is None:
                raise BuildError(f"podman info failed: {info.stderr.decode(errors='replace').strip()[-300:]}")
            self._storage = store
        root, driver = self._storage
        proc = self._run_quiet(self._podman("ps", "--all", "--external", "--format", "json"))
        if proc.returncode != 0:
            raise BuildError(f"podman ps failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
        containers = json.loads(proc.stdout.decode() or "null") or []
        return containers_of_build(containers, build_id, lambda cid: builder_args(root, driver, cid))
