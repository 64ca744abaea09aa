"""repo2docker --json-logs lines -> phases, messages and a bounded tail."""
from __future__ import annotations

import io
import json
import logging

from repo2docker.utils import R2dState

try:  # the formatter repo2docker uses (pythonjsonlogger.jsonlogger is its old, deprecated name)
    from pythonjsonlogger.json import JsonFormatter
except ImportError:  # pragma: no cover - older python-json-logger
    from pythonjsonlogger.jsonlogger import JsonFormatter

from bot.builders.r2d_logs import LogReader, LogTail, advance, parse_line, redact
from bot.model import Phase


def r2d_emitted(*records: tuple[str, R2dState | None]) -> list[str]:
    """Lines exactly as repo2docker's own JSON log handler writes them."""
    out = io.StringIO()
    logger = logging.getLogger("test-r2d-json")
    logger.handlers = []
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for message, phase in records:
        logger.info(message, extra={"phase": phase} if phase is not None else {})
    return out.getvalue().splitlines()


def test_real_repo2docker_lines_map_to_phases():
    lines = r2d_emitted(
        ("Picked Git content provider.\n", None),
        ("Cloning into '/tmp/repo2dockerabc'...\n", R2dState.FETCHING),
        ("Step 1/10 : FROM docker.io/library/buildpack-deps:jammy\n", R2dState.BUILDING),
        ("Pushing image\n", R2dState.PUSHING),
        ("Error during build: boom", R2dState.FAILED),
    )
    assert [parse_line(x) for x in lines] == [
        (None, "Picked Git content provider."),
        (Phase.FETCHING, "Cloning into '/tmp/repo2dockerabc'..."),
        (Phase.BUILDING, "Step 1/10 : FROM docker.io/library/buildpack-deps:jammy"),
        (Phase.PUSHING, "Pushing image"),
        (Phase.FAILED, "Error during build: boom"),
    ]


def test_buildx_push_lines_in_the_building_phase_mean_pushing():
    line = json.dumps({"message": "#12 pushing layers 0.4s done\n", "phase": "building"})
    assert parse_line(line) == (Phase.PUSHING, "#12 pushing layers 0.4s done")
    line = json.dumps({"message": "#12 pushing manifest for reg/x:abc@sha256:00 done\n", "phase": "building"})
    assert parse_line(line)[0] is Phase.PUSHING


def test_podman_engine_push_line_means_pushing():
    """PodmanEngine yields "Pushing image <tag>" from build(): repo2docker logs it in the building phase."""
    tag = "127.0.0.1:5000/binder-octo-repo-55ab5c:" + "a" * 40
    push, copying, building = r2d_emitted(
        (f"Pushing image {tag}\n", R2dState.BUILDING),
        ("Copying blob sha256:0123 done\n", R2dState.BUILDING),
        ("STEP 2/5: RUN echo pushing images is not a push\n", R2dState.BUILDING),
    )
    assert parse_line(push) == (Phase.PUSHING, f"Pushing image {tag}")
    assert parse_line(building)[0] is Phase.BUILDING
    reader = LogReader()
    reader.feed(building)
    assert reader.feed(push) == (Phase.PUSHING, f"Pushing image {tag}")
    assert reader.feed(copying) == (Phase.PUSHING, "Copying blob sha256:0123 done")


def test_non_json_and_odd_lines_pass_through():
    assert parse_line(b"fatal: could not read Username\n") == (None, "fatal: could not read Username")
    assert parse_line("{not json") == (None, "{not json")
    assert parse_line('{"no": "message"}') == (None, '{"no": "message"}')
    assert parse_line(json.dumps({"message": "Fetching base image...\r", "phase": "building"})) == (
        Phase.BUILDING, "Fetching base image...")
    assert parse_line(json.dumps({"message": "x", "phase": "running"})) == (None, "x")


def test_very_long_lines_are_cut():
    phase, message = parse_line("y" * 100_000)
    assert len(message) < 5000


def test_phases_only_move_forward():
    assert advance(Phase.FETCHING, Phase.BUILDING) is Phase.BUILDING
    assert advance(Phase.PUSHING, Phase.BUILDING) is Phase.PUSHING
    assert advance(Phase.BUILDING, Phase.FAILED) is Phase.BUILDING
    assert advance(Phase.BUILDING, None) is Phase.BUILDING


def test_log_tail_is_bounded():
    tail = LogTail(3)
    for i in range(10):
        tail.append(f"line {i}")
    assert tail.lines() == ("line 7", "line 8", "line 9")


def test_reader_keeps_phase_tail_failure_and_redacts_secrets():
    reader = LogReader(tail_lines=2, secrets=["s3cr3t-token", None])
    assert reader.feed(json.dumps({"message": "cloning https://x:s3cr3t-token@h/r", "phase": "fetching"})) == (
        Phase.FETCHING, "cloning https://x:***@h/r")
    assert reader.feed("") is None
    assert reader.feed(json.dumps({"message": "Step 1", "phase": "building"})) == (Phase.BUILDING, "Step 1")
    assert reader.feed(json.dumps({"message": "Error during build: no space", "phase": "failed"})) == (
        Phase.BUILDING, "Error during build: no space")
    assert reader.failure == "Error during build: no space"
    assert reader.tail.lines() == ("Step 1", "Error during build: no space")
    assert redact("a abcd", ["abcd"]) == "a ***"
