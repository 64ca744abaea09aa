"""The GitHub App's identity: App JWTs and cached installation access tokens.

Installation tokens last an hour; asking for one per API call would double our
request count and hit GitHub's limits, so they are cached (per installation, and
per (installation, repositories, permissions) for scoped tokens) in a
cachetools TTLCache and reused until shortly before their ``expires_at``.
Concurrent callers share one in-flight token request per key.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import cachetools
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

JWT_BACKDATE = 60  # seconds: iat in the past, for clock drift between us and GitHub
JWT_LIFETIME = 9 * 60  # exp - now; GitHub refuses exp more than 10 minutes ahead
JWT_REUSE = 5 * 60  # a cached JWT is reused for this long, so it always has >= 4 min left
TOKEN_MARGIN = 5 * 60  # drop a token this long before its expires_at
TOKEN_MAX_TTL = 3600  # GitHub's installation tokens never live longer

Clock = Callable[[], float]


def load_signing_key(private_key: str) -> Any:
    """The PEM parsed once: parsing checks the RSA key (about 30 ms of CPU), signing with
    the parsed key takes a fraction of a millisecond. A PEM string handed to PyJWT is
    parsed again on every signature, on the event loop."""
    return serialization.load_pem_private_key(private_key.encode(), password=None)


def make_jwt(app_id: str, private_key: Any, *, now: float | None = None) -> str:
    """An App JWT (RS256): iat 60 s in the past, exp 9 minutes ahead (GitHub allows at most 10).

    ``private_key``: a key from ``load_signing_key`` (or a PEM string, parsed each call)."""
    now = time.time() if now is None else now
    payload = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": str(app_id)}
    return pyjwt.encode(payload, private_key, algorithm="RS256")


def parse_expires_at(value: str | None) -> float | None:
    """GitHub's ``expires_at`` (ISO 8601, ``Z``) as epoch seconds; None if absent or unreadable."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


TokenKey = tuple[int, tuple[str, ...] | None, tuple[tuple[str, str], ...] | None]


def token_key(installation_id: int, repositories: list[str] | None = None,
              permissions: Mapping[str, str] | None = None) -> TokenKey:
    """The cache key: an unscoped token, or one limited to these repositories and permissions."""
    repos = tuple(sorted({r.split("/")[-1] for r in repositories})) if repositories is not None else None
    perms = tuple(sorted(permissions.items())) if permissions is not None else None
    return (int(installation_id), repos, perms)


@dataclasses.dataclass(frozen=True)
class InstallationToken:
    token: str = dataclasses.field(repr=False)
    expires_at: float  # epoch seconds

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - TOKEN_MARGIN


# (key) -> the token body GitHub returned ({"token", "expires_at", ...})
TokenFetcher = Callable[[TokenKey], Awaitable[Mapping[str, Any]]]


class AppIdentity:
    """JWTs for the App and a cache of installation tokens, independent of any HTTP client.

    ``fetch`` performs ``POST /app/installations/{id}/access_tokens``; the client
    module supplies it so that every request goes through the one retrying client.
    """

    def __init__(self, app_id: str, private_key: str, *, clock: Clock = time.time,
                 maxsize: int = 1024) -> None:
        if not app_id or not private_key:
            raise ValueError("a GitHub App needs an app id and a private key")
        self.app_id = str(app_id)
        self._private_key = private_key
        self._signing_key: Any = None  # parsed on the first JWT (a bad PEM fails there, as before)
        self._clock = clock
        self._jwt: tuple[str, float] | None = None
        # The TTL bounds every entry by GitHub's maximum token life; each entry's own
        # expires_at (minus a margin) is checked on read as well.
        self._tokens: cachetools.TTLCache[TokenKey, InstallationToken] = cachetools.TTLCache(
            maxsize=maxsize, ttl=TOKEN_MAX_TTL - TOKEN_MARGIN, timer=clock)
        self._inflight: dict[TokenKey, asyncio.Future[InstallationToken]] = {}

    def __repr__(self) -> str:
        return f"AppIdentity(app_id={self.app_id!r})"

    # JWT -------------------------------------------------------------------
    def jwt(self) -> str:
        """A JWT for /app endpoints; reused for a few minutes (signing is not free).

        The claims are gidgethub.apps.get_jwt's (iat backdated 60 s, RS256), made here
        with an injectable clock so the lifetime can be tested.
        """
        now = self._clock()
        if self._jwt is None or now - self._jwt[1] >= JWT_REUSE:
            self._jwt = (make_jwt(self.app_id, self.signing_key(), now=now), now)
        return self._jwt[0]

    def fresh_jwt(self) -> str:
        """A new JWT on the wall clock, for a token request (as gidgethub.apps made one per token),
        signed with the key parsed once."""
        return make_jwt(self.app_id, self.signing_key())

    def signing_key(self) -> Any:
        """The private key, parsed on first use (``prepare`` does it at startup, off the loop)."""
        if self._signing_key is None:
            self._signing_key = load_signing_key(self._private_key)
        return self._signing_key

    async def prepare(self) -> None:
        """Parse the key in a thread at startup, so no request waits ~30 ms for it on the loop;
        a key that cannot be read is logged here and fails at its first use, as before."""
        try:
            await asyncio.to_thread(self.signing_key)
        except Exception as e:  # noqa: BLE001 - only logged: the first use raises it again
            log.error("the GitHub App's private key cannot be read: %s", type(e).__name__)

    def drop_jwt(self) -> None:
        self._jwt = None

    # installation tokens -------------------------------------------------------
    def cached(self, key: TokenKey) -> InstallationToken | None:
        tok = self._tokens.get(key)
        if tok is not None and not tok.fresh(self._clock()):
            self._tokens.pop(key, None)
            return None
        return tok

    async def token(self, key: TokenKey, fetch: TokenFetcher) -> InstallationToken:
        """The cached token for ``key``, or a new one (one request however many callers wait)."""
        while True:
            tok = self.cached(key)
            if tok is not None:
                return tok
            pending = self._inflight.get(key)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if pending.cancelled() and not (me is not None and me.cancelling()):
                    continue  # the caller that was fetching was cancelled, not us: fetch ourselves
                raise
        fut: asyncio.Future[InstallationToken] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            body = await fetch(key)
            tok = self._from_body(key, body)
            self._tokens[key] = tok
            fut.set_result(tok)
            return tok
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            self._inflight.pop(key, None)

    def _from_body(self, key: TokenKey, body: Mapping[str, Any]) -> InstallationToken:
        token = body.get("token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ValueError(f"installation {key[0]}: GitHub's token answer has no token")
        expires = parse_expires_at(body.get("expires_at"))
        now = self._clock()
        if expires is None:
            log.warning("installation %s: token answer has no usable expires_at; assuming one hour", key[0])
            expires = now + TOKEN_MAX_TTL
        return InstallationToken(token, expires)

    def invalidate(self, key: TokenKey, token: str | None = None) -> bool:
        """Forget the token for ``key`` (only if it is still ``token``, when given): after a 401."""
        cur = self._tokens.get(key)
        if cur is None or (token is not None and cur.token != token):
            return False
        self._tokens.pop(key, None)
        return True

    def forget_installation(self, installation_id: int) -> None:
        """Drop every token of an installation (deleted, suspended, permissions changed)."""
        for key in [k for k in list(self._tokens.keys()) if k[0] == int(installation_id)]:
            self._tokens.pop(key, None)
