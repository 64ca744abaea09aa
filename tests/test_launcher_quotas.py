"""Launch limits as decisions over plain data: server caps and the per-IP rate."""
from __future__ import annotations

from launcher.quotas import (Limit, RateLimiter, ServerCounts, active_servers_from_users, check_servers,
                             count_servers, merge_snapshot)

PREFIX = "127.0.0.1:5000/binder-prebuild/"


def test_total_cap_is_checked_first_and_named():
    r = check_servers(ServerCounts(total=5, for_repo=5), 5, 2, "octo/demo")
    assert r is not None and r.limit is Limit.TOTAL
    assert "5 servers in total" in r.message and r.retry_after > 0


def test_per_repo_cap_names_the_repository():
    r = check_servers(ServerCounts(total=3, for_repo=2), 10, 2, "octo/demo")
    assert r is not None and r.limit is Limit.PER_REPO
    assert "octo/demo" in r.message and "2 per repository" in r.message


def test_room_left_means_no_refusal():
    assert check_servers(ServerCounts(total=9, for_repo=1), 10, 2, "octo/demo") is None
    assert check_servers(ServerCounts(total=0, for_repo=0), 0, 0, "o/r") is not None  # 0 = none allowed


def test_rate_limit_slides_per_client():
    now = [1000.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.hit("1.2.3.4") for _ in range(3)] == [None, None, None]
    refused = limiter.hit("1.2.3.4")
    assert refused is not None and refused.limit is Limit.RATE
    assert "3 per minute" in refused.message and refused.retry_after == 60
    assert limiter.hit("5.6.7.8") is None  # other clients are not affected
    now[0] += 30
    r = limiter.hit("1.2.3.4")
    assert r is not None and r.retry_after == 30
    now[0] += 30.5  # the first three hits have left the window
    assert limiter.hit("1.2.3.4") is None


def test_rate_limit_off_when_zero():
    limiter = RateLimiter(0)
    assert all(limiter.hit("x") is None for _ in range(100))


def test_servers_are_counted_from_the_hub_answer():
    users = [
        {"name": "a", "servers": {"": {"ready": True, "stopped": False,
                                       "user_options": {"image": PREFIX + "octo-2ddemo-abc123:1111"}}}},
        {"name": "b", "servers": {"": {"pending": "spawn", "stopped": False,
                                       "user_options": {"image": PREFIX + "octo-2ddemo-abc123:2222"}}}},
        {"name": "c", "servers": {"x": {"ready": True, "stopped": False,
                                        "user_options": {"image": PREFIX + "other-2drepo-def456:3333"}}}},
        {"name": "d", "servers": {"": {"ready": False, "stopped": True, "user_options": {}}}},
        {"name": "e", "servers": {"": {"ready": True, "user_options": None}}},
    ]
    servers = active_servers_from_users(users)
    assert sorted(s for s, _ in servers) == ["a/", "b/", "c/x", "e/"]
    counts = count_servers(servers + [("a/", PREFIX + "octo-2ddemo-abc123")], PREFIX + "octo-2ddemo-abc123")
    assert counts == ServerCounts(total=4, for_repo=2)


def test_a_hub_read_keeps_our_changes_made_while_it_was_in_flight():
    journal = [(10.0, "old/", "r", True), (20.0, "a/", "r", True), (21.0, "b/", None, False)]
    servers, left = merge_snapshot([("old/", "r"), ("b/", "r")], journal, began=15.0)
    # "old/" started before the read began (the read shows it); "a/" became ready during the read
    # (the read may have missed it); "b/" was stopped by us during the read (the read may still list it)
    assert servers == {"old/": "r", "a/": "r"}
    assert left == journal[1:]
    servers, left = merge_snapshot([], left, began=30.0)
    assert servers == {} and left == []  # a later read is the truth: the culler stopped them
