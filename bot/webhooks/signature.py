"""Pure checks for one webhook request: content type, signature, headers, payload.

No I/O here: the receiver reads the body (with the size cap) and hands the bytes
and headers to :func:`parse_delivery`, which either returns a
:class:`ParsedDelivery` or raises :class:`BadDelivery` carrying the 4xx status.
The order of the checks is part of the contract: content type, then signature,
then headers and JSON, so an unsigned request learns nothing about its payload.
"""
from __future__ import annotations

import enum
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

try:  # optional: 2-3x faster than the stdlib on GitHub's payloads (the receiver's largest CPU item)
    import orjson as _orjson
except ImportError:  # pragma: no cover - the stdlib parser alone gives the same answers
    _orjson = None

MAX_BODY_BYTES = 25 * 1024 * 1024
"""GitHub caps payloads at 25 MB; anything above is refused with 413 unread."""

SIGNATURE_PREFIX = "sha256="

# Headers worth keeping with a stored delivery (never cookies or authorization a
# proxy might add). Lowercase.
KEPT_HEADERS = frozenset({
    "content-type", "user-agent", "x-github-event", "x-github-delivery", "x-github-hook-id",
    "x-github-hook-installation-target-id", "x-github-hook-installation-target-type",
    "x-hub-signature-256", "x-github-enterprise-host", "x-github-enterprise-version",
})

_KEPT_ORDER = tuple(sorted(KEPT_HEADERS))

_EVENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DELIVERY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class Outcome(str, enum.Enum):
    """How the receiver answered one request (the metrics label)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REPLAY = "replay"
    PING = "ping"
    NO_SECRET = "no_secret"
    BAD_SIGNATURE = "bad_signature"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    BODY_TIMEOUT = "body_timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAVAILABLE = "unavailable"


class MediaType(str, enum.Enum):
    JSON = "application/json"
    FORM = "application/x-www-form-urlencoded"


class BadDelivery(Exception):
    """A request we refuse; ``status`` is the 4xx to answer with."""

    def __init__(self, status: int, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


@dataclass(frozen=True)
class ParsedDelivery:
    delivery_id: str
    event: str
    payload: dict[str, Any]
    action: str | None
    installation_id: int | None
    repo: str | None
    headers: dict[str, str]


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return SIGNATURE_PREFIX + hmac.digest(secret.encode(), body, "sha256").hex()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Constant-time check of an ``X-Hub-Signature-256`` header against the raw body."""
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = sign(body, secret)
    # compare_digest on bytes: a non-ASCII header must not raise
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


def too_large(content_length: int | None) -> bool:
    return content_length is not None and content_length > MAX_BODY_BYTES


def media_type(content_type: str | None) -> MediaType:
    """The accepted media type of a Content-Type header, or 415."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return MediaType(mime)
    except ValueError:
        raise BadDelivery(
            415, Outcome.UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type: send application/json or application/x-www-form-urlencoded",
        ) from None


def decode_payload(kind: MediaType, body: bytes, *, fast: bool = False) -> dict[str, Any]:
    """The JSON object in a body of the given media type, or 400 (``fast``: see :func:`_loads`)."""
    try:
        if kind is MediaType.FORM:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
            values = fields.get("payload")
            if not values or len(values) != 1:
                raise BadDelivery(400, Outcome.BAD_REQUEST, "form body must carry exactly one 'payload' field")
            data = json.loads(values[0])
        else:
            data = _loads(body, fast=fast)
    except BadDelivery:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadDelivery(400, Outcome.BAD_REQUEST, f"malformed JSON payload: {_short(e)}") from None
    if not isinstance(data, dict):
        raise BadDelivery(400, Outcome.BAD_REQUEST, "payload must be a JSON object")
    return data


def _loads(body: bytes, *, fast: bool) -> Any:
    """``json.loads``; with ``fast``, through orjson when it is installed.

    orjson refuses a few documents the stdlib accepts (NaN, lone surrogates):
    those fall back to ``json.loads``, so what is accepted or refused (400) never
    depends on orjson. It also reads integers beyond 64 bits as floats, so only
    the receiver's check (which keeps the raw body and reads three fields) uses
    it; handlers get the stdlib's reading of the stored body.
    """
    if fast and _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(body)


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The kept headers, by lowercase name (``headers`` as for :func:`parse_delivery`).

    Ten lookups instead of a pass over every header the request carries.
    """
    return {k: v for k in _KEPT_ORDER if (v := headers.get(k)) is not None}


def parse_delivery(headers: Mapping[str, str], body: bytes, secret: str | None) -> ParsedDelivery:
    """Check one request (already read, within the size cap) in the contract's order.

    ``headers`` must be case-insensitive (aiohttp's CIMultiDict is) or lowercase.
    """
    if not secret:
        raise BadDelivery(401, Outcome.NO_SECRET,
                          "webhook secret not configured; this service refuses unsigned webhooks")
    kind = media_type(headers.get("content-type"))
    if not verify_signature(body, headers.get("x-hub-signature-256"), secret):
        if headers.get("x-hub-signature-256"):
            raise BadDelivery(401, Outcome.BAD_SIGNATURE, "X-Hub-Signature-256 does not match the body")
        raise BadDelivery(401, Outcome.BAD_SIGNATURE, "missing X-Hub-Signature-256 header")
    event = (headers.get("x-github-event") or "").strip()
    if not event:
        raise BadDelivery(400, Outcome.BAD_REQUEST, "missing X-GitHub-Event header")
    if not _EVENT_RE.match(event):
        raise BadDelivery(400, Outcome.BAD_REQUEST, "malformed X-GitHub-Event header")
    delivery_id = (headers.get("x-github-delivery") or "").strip()
    if not delivery_id:
        raise BadDelivery(400, Outcome.BAD_REQUEST, "missing X-GitHub-Delivery header")
    if not _DELIVERY_RE.match(delivery_id):
        raise BadDelivery(400, Outcome.BAD_REQUEST, "malformed X-GitHub-Delivery header")
    payload = decode_payload(kind, body, fast=True)
    return ParsedDelivery(
        delivery_id=delivery_id, event=event, payload=payload, action=_str(payload.get("action")),
        installation_id=installation_id(payload), repo=repo_full_name(payload), headers=kept_headers(headers),
    )


def installation_id(payload: Mapping[str, Any]) -> int | None:
    inst = payload.get("installation")
    if isinstance(inst, dict):
        i = inst.get("id")
        if isinstance(i, int) and not isinstance(i, bool):
            return i
    return None


def repo_full_name(payload: Mapping[str, Any]) -> str | None:
    repo = payload.get("repository")
    if isinstance(repo, dict):
        return _str(repo.get("full_name"))
    return None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _short(e: Exception) -> str:
    return str(e)[:200]
