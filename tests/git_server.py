"""Real git repositories served over smart HTTP on loopback (``git http-backend``).

Repositories created with ``private=True`` answer 401 unless the request
carries Basic auth ``x-access-token:<token>`` (how GitHub takes an installation
token), so a test can prove a clone used the token without the token ever
being in a URL. Runs in a thread: usable from sync and async tests alike.

Every request is written down (``requests``, ``ref_adverts(name)`` counts the
ref advertisements a clone or ``git ls-remote`` starts with), and ``hold.clear()``
makes requests wait until ``hold.set()`` (a host that does not answer; ``held``
counts the waiting ones).
"""
from __future__ import annotations

import base64
import dataclasses
import http.server
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclasses.dataclass(frozen=True)
class Commit:
    clone_url: str
    sha: str


class GitServer:
    """``create(name, files, private=...)`` / ``commit(name, files)`` -> Commit(clone_url, sha)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos = root / "repos"
        self.work = root / "work"
        self.repos.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.token = "ghs_" + secrets.token_hex(18)  # what private repositories accept
        self.private: set[str] = set()
        self.auth_seen: list[tuple[str, str]] = []  # (repo, password) of authorized requests
        self.denied: list[str] = []  # repos asked for without valid credentials
        self.requests: list[tuple[str, str]] = []  # (method, path with query) of every request
        self.hold = threading.Event()  # cleared: requests wait (a host that does not answer)
        self.hold.set()
        self.held = 0  # requests waiting on ``hold`` now
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- repositories
    def _git(self, *args: str, cwd: Path) -> str:
        env = {**os.environ, **_GIT_ENV, "HOME": str(self.root)}
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                              text=True, timeout=60).stdout.strip()

    def clone_url(self, name: str) -> str:
        return f"{self.url}/{name}.git"

    def create(self, name: str, files: dict[str, str | bytes], *, private: bool = False,
               message: str = "initial commit") -> Commit:
        bare = self.repos / f"{name}.git"
        if bare.exists():
            raise ValueError(f"repository {name} exists")
        bare.parent.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=self.root)
        work = self.work / name
        work.parent.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "-b", "main", str(work), cwd=self.root)
        if private:
            self.private.add(name)
        return self.commit(name, files, message=message)

    def tag(self, name: str, tag: str, sha: str, *, annotated: bool = False) -> str:
        """Tag ``sha`` in the served repository; returns the tag object's sha (annotated) or ``sha``."""
        bare = self.repos / f"{name}.git"
        if annotated:
            self._git("tag", "-a", "-m", tag, tag, sha, cwd=bare)
        else:
            self._git("tag", tag, sha, cwd=bare)
        return self._git("rev-parse", f"refs/tags/{tag}", cwd=bare)

    def ref_adverts(self, name: str) -> int:
        """How many times a client asked for ``name``'s refs (each clone or ls-remote asks once)."""
        with self._lock:
            return sum(1 for _, path in self.requests if path.startswith(f"/{name}.git/info/refs"))

    def commit(self, name: str, files: dict[str, str | bytes], *, message: str = "update") -> Commit:
        work = self.work / name
        for rel, content in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self._git("add", "--all", cwd=work)
        self._git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work)
        self._git("push", "--quiet", str(self.repos / f"{name}.git"), "HEAD:refs/heads/main", cwd=work)
        return Commit(self.clone_url(name), self._git("rev-parse", "HEAD", cwd=work))

    # -- serving
    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._backend()

            def do_POST(self) -> None:
                self._backend()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a killed ls-remote)
                    self.close_connection = True

            def _backend(self) -> None:
                with server._lock:
                    server.requests.append((self.command, self.path))
                if not server.hold.is_set():
                    with server._lock:
                        server.held += 1
                    server.hold.wait()
                    with server._lock:
                        server.held -= 1
                path, _, query = self.path.partition("?")
                repo = path.lstrip("/").split(".git/", 1)[0]
                body = self._body() if self.command == "POST" else b""
                user = ""
                if repo in server.private:
                    password = None
                    auth = self.headers.get("Authorization", "")
                    if auth.startswith("Basic "):
                        try:
                            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                        except ValueError:
                            password = None
                    if password != server.token:
                        with server._lock:
                            server.denied.append(repo)
                        self._reply(401, {"WWW-Authenticate": 'Basic realm="git"', "Content-Type": "text/plain"},
                                    b"authentication required\n")
                        return
                    with server._lock:
                        server.auth_seen.append((repo, password))
                env = {
                    "PATH": os.environ.get("PATH", os.defpath),
                    "GIT_PROJECT_ROOT": str(server.repos), "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": self.client_address[0], "REMOTE_USER": user,
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = proc.stdout.partition(b"\n\n")
                status, headers = 200, {}
                for line in head.decode("latin-1").splitlines():
                    k, _, v = line.partition(":")
                    if k.lower() == "status":
                        status = int(v.strip().split()[0])
                    elif k:
                        headers[k.strip()] = v.strip()
                if proc.returncode != 0 and not head:
                    status, payload = 500, proc.stderr
                self._reply(status, headers, payload)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="git-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.hold.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        shutil.rmtree(self.root, ignore_errors=True)
