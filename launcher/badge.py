"""The status badge: a "launch binder" SVG whose right half shows the image's state.

Pure rendering; the route picks the state and sets the cache headers.
"""
from __future__ import annotations

import enum
import hashlib
from html import escape

from bot.model import BuildState


class BadgeState(str, enum.Enum):
    READY = "ready"
    BUILDING = "building"
    QUEUED = "queued"
    FAILED = "failed"
    NOT_BUILT = "not built"
    UNKNOWN = "unknown"


COLOURS: dict[BadgeState, str] = {
    BadgeState.READY: "#4c1",  # green
    BadgeState.BUILDING: "#dfb317",  # yellow
    BadgeState.QUEUED: "#fe7d37",  # orange
    BadgeState.FAILED: "#e05d44",  # red
    BadgeState.NOT_BUILT: "#9f9f9f",  # grey
    BadgeState.UNKNOWN: "#9f9f9f",
}
LEFT_TEXT = "launch binder"
LEFT_COLOUR = "#555"

# Approximate advance widths (px) of Verdana 11px, as shields.io-style badges assume.
_WIDE = set("mwMW@%")
_NARROW = set("iljtfI!.,:;'|()[] ")


def _text_width(text: str) -> int:
    w = 0.0
    for ch in text:
        if ch in _WIDE:
            w += 10.0
        elif ch in _NARROW:
            w += 3.9
        elif ch.isupper() or ch.isdigit():
            w += 7.6
        else:
            w += 6.6
    return int(round(w))


def state_for(build_state: BuildState | None, image_present: bool | None = None) -> BadgeState:
    """Map the latest build record (and, without one, the registry's answer) to a badge state."""
    if build_state is BuildState.BUILT:
        return BadgeState.READY
    if build_state is BuildState.RUNNING:
        return BadgeState.BUILDING
    if build_state is BuildState.QUEUED:
        return BadgeState.QUEUED
    if build_state is BuildState.FAILED:
        return BadgeState.FAILED
    if image_present:
        return BadgeState.READY
    return BadgeState.NOT_BUILT


def render(state: BadgeState, left: str = LEFT_TEXT) -> str:
    """A flat two-part badge, accessible (title and aria-label name both halves)."""
    right = state.value
    lw = _text_width(left) + 20
    rw = _text_width(right) + 20
    total = lw + rw
    colour = COLOURS[state]
    label = escape(f"{left}: {right}")
    left_e, right_e = escape(left), escape(right)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="{LEFT_COLOUR}"/>'
        f'<rect x="{lw}" width="{rw}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{left_e}</text>'
        f'<text x="{lw / 2:.1f}" y="14">{left_e}</text>'
        f'<text x="{lw + rw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{right_e}</text>'
        f'<text x="{lw + rw / 2:.1f}" y="14">{right_e}</text></g></svg>'
    )


def etag(svg: str) -> str:
    return '"' + hashlib.sha256(svg.encode()).hexdigest()[:20] + '"'


# GitHub's image proxy (camo) refetches only what says no-cache; browsers may keep it 30 s.
CACHE_CONTROL = "no-cache, max-age=30"
