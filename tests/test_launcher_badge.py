"""The status badge as pure rendering: states, colours, text, ETag."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bot.model import BuildState
from launcher.badge import COLOURS, BadgeState, etag, render, state_for

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("build_state,present,expected", [
    (BuildState.BUILT, None, BadgeState.READY),
    (BuildState.RUNNING, None, BadgeState.BUILDING),
    (BuildState.QUEUED, None, BadgeState.QUEUED),
    (BuildState.FAILED, None, BadgeState.FAILED),
    (BuildState.CANCELLED, None, BadgeState.NOT_BUILT),
    (None, None, BadgeState.NOT_BUILT),
    (None, False, BadgeState.NOT_BUILT),
    (None, True, BadgeState.READY),  # built elsewhere (a BinderHub sharing the registry)
])
def test_state_for_records(build_state, present, expected):
    assert state_for(build_state, present) is expected


@pytest.mark.parametrize("state", list(BadgeState))
def test_render_is_valid_svg_with_both_halves(state):
    svg = render(state)
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "launch binder" in texts and state.value in texts
    fills = [r.get("fill") for r in root.iter(SVG + "rect")]
    assert COLOURS[state] in fills
    assert root.get("aria-label") == f"launch binder: {state.value}"
    assert int(root.get("width")) > 60


def test_colours_say_the_state():
    assert COLOURS[BadgeState.READY] == "#4c1"
    assert COLOURS[BadgeState.FAILED] == "#e05d44"
    assert COLOURS[BadgeState.NOT_BUILT] == "#9f9f9f"
    assert len({COLOURS[s] for s in (BadgeState.READY, BadgeState.BUILDING, BadgeState.FAILED,
                                     BadgeState.NOT_BUILT)}) == 4


def test_etag_changes_with_the_picture():
    assert etag(render(BadgeState.READY)) == etag(render(BadgeState.READY))
    assert etag(render(BadgeState.READY)) != etag(render(BadgeState.FAILED))
    assert etag(render(BadgeState.READY)).startswith('"')
