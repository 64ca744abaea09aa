"""FakeGitHub itself: auth like GitHub, shape validation, pagination, faults."""
from __future__ import annotations

import base64
import time

import aiohttp
import jwt

from tests.fake_github import Fault


def _jwt(fake, **claims):
    now = int(time.time())
    payload = {"iat": now - 60, "exp": now + 540, "iss": str(fake.app_id), **claims}
    return jwt.encode(payload, fake.private_key, algorithm="RS256")


async def _token(session, fake, inst_id, body=None):
    async with session.post(f"{fake.url}/app/installations/{inst_id}/access_tokens",
                            headers={"Authorization": f"Bearer {_jwt(fake)}"}, json=body) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["token"]


async def test_app_routes_need_a_valid_jwt(fake_github):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{fake_github.url}/app") as r:
            assert r.status == 401
        async with s.get(f"{fake_github.url}/app", headers={"Authorization": "Bearer nonsense"}) as r:
            assert r.status == 401
        too_long = _jwt(fake_github, exp=int(time.time()) + 3600)
        async with s.get(f"{fake_github.url}/app", headers={"Authorization": f"Bearer {too_long}"}) as r:
            assert r.status == 401
            assert "too far" in (await r.json())["message"]
        async with s.get(f"{fake_github.url}/app", headers={"Authorization": f"Bearer {_jwt(fake_github)}"}) as r:
            assert r.status == 200
            assert (await r.json())["id"] == fake_github.app_id


async def test_repo_routes_need_an_unexpired_installation_token(fake_github):
    inst = fake_github.add_installation(["octo/private"], account="octo")
    fake_github.repo("octo/private").private = True
    fake_github.add_repo("other/repo", private=True)
    async with aiohttp.ClientSession() as s:
        url = f"{fake_github.url}/repos/octo/private"
        async with s.get(url) as r:
            assert r.status == 404  # private repo, anonymous
        async with s.get(url, headers={"Authorization": f"Bearer {_jwt(fake_github)}"}) as r:
            assert r.status == 401  # a JWT is not an installation token
        tok = await _token(s, fake_github, inst.id)
        async with s.get(url, headers={"Authorization": f"token {tok}"}) as r:
            assert r.status == 200
            assert (await r.json())["full_name"] == "octo/private"
        async with s.get(f"{fake_github.url}/repos/other/repo", headers={"Authorization": f"token {tok}"}) as r:
            assert r.status == 404  # not in this installation
        fake_github.expire_tokens()
        async with s.get(url, headers={"Authorization": f"token {tok}"}) as r:
            assert r.status == 401


async def test_check_run_shapes_are_validated(fake_github):
    inst = fake_github.add_installation(["octo/repo"])
    sha = fake_github.repo("octo/repo").branches["main"]
    async with aiohttp.ClientSession() as s:
        h = {"Authorization": f"token {await _token(s, fake_github, inst.id)}"}
        url = f"{fake_github.url}/repos/octo/repo/check-runs"
        async with s.post(url, headers=h, json={"name": "Binder"}) as r:
            assert r.status == 422
        async with s.post(url, headers=h, json={"name": "Binder", "head_sha": sha, "status": "bogus"}) as r:
            assert r.status == 422
        async with s.post(url, headers=h, json={"name": "Binder", "head_sha": sha, "status": "in_progress"}) as r:
            assert r.status == 201
            run = await r.json()
        patch = f"{url}/{run['id']}"
        async with s.patch(patch, headers=h, json={"conclusion": "success",
                                                   "output": {"title": "t", "summary": "x" * 65536}}) as r:
            assert r.status == 422
        async with s.patch(patch, headers=h, json={"conclusion": "success", "output": {"title": "t", "summary": "ok"}}) as r:
            assert r.status == 200
            assert (await r.json())["status"] == "completed"
    assert len(fake_github.rejected) == 3


async def test_missing_permission_is_403(fake_github):
    inst = fake_github.add_installation(["octo/repo"], permissions={"metadata": "read", "contents": "read"})
    sha = fake_github.repo("octo/repo").branches["main"]
    async with aiohttp.ClientSession() as s:
        h = {"Authorization": f"token {await _token(s, fake_github, inst.id)}"}
        async with s.post(f"{fake_github.url}/repos/octo/repo/check-runs", headers=h,
                          json={"name": "Binder", "head_sha": sha}) as r:
            assert r.status == 403


async def test_contents_are_base64_like_github(fake_github):
    fake_github.add_repo("octo/repo", files={".github/binder.yml": "build: true\n", "environment.yml": "x"})
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{fake_github.url}/repos/octo/repo/contents/.github/binder.yml") as r:
            data = await r.json()
            assert data["encoding"] == "base64"
            assert base64.b64decode(data["content"]) == b"build: true\n"
        async with s.get(f"{fake_github.url}/repos/octo/repo/contents/missing.yml") as r:
            assert r.status == 404
        async with s.get(f"{fake_github.url}/repos/octo/repo/contents/.github") as r:
            assert [e["name"] for e in await r.json()] == ["binder.yml"]


async def test_comments_paginate_with_link_headers(fake_github):
    inst = fake_github.add_installation(["octo/repo"])
    async with aiohttp.ClientSession() as s:
        h = {"Authorization": f"token {await _token(s, fake_github, inst.id)}"}
        for i in range(5):
            async with s.post(f"{fake_github.url}/repos/octo/repo/issues/1/comments", headers=h,
                              json={"body": f"c{i}"}) as r:
                assert r.status == 201
        async with s.get(f"{fake_github.url}/repos/octo/repo/issues/1/comments?per_page=2", headers=h) as r:
            assert [c["body"] for c in await r.json()] == ["c0", "c1"]
            assert 'rel="next"' in r.headers["Link"] and "page=2" in r.headers["Link"]
        async with s.get(f"{fake_github.url}/repos/octo/repo/issues/1/comments?per_page=2&page=3", headers=h) as r:
            assert [c["body"] for c in await r.json()] == ["c4"]
            assert 'rel="next"' not in r.headers["Link"]


async def test_faults_are_served_in_order_then_the_real_answer(fake_github):
    fake_github.add_repo("octo/repo")
    fake_github.inject("GET", "/repos/{owner}/{repo}", Fault.server_error(503), Fault.secondary_rate_limit(7))
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(3):
            async with s.get(f"{fake_github.url}/repos/octo/repo") as r:
                statuses.append((r.status, r.headers.get("Retry-After")))
    assert statuses == [(503, None), (403, "7"), (200, None)]
    assert fake_github.pending_faults() == 0
    assert [c.status for c in fake_github.calls("GET", "/repos/{owner}/{repo}")] == [503, 403, 200]


async def test_scoped_token_sees_only_its_repositories(fake_github):
    inst = fake_github.add_installation(["octo/a", "octo/b"])
    async with aiohttp.ClientSession() as s:
        tok = await _token(s, fake_github, inst.id, {"repositories": ["a"], "permissions": {"contents": "read"}})
        h = {"Authorization": f"token {tok}"}
        async with s.get(f"{fake_github.url}/repos/octo/a", headers=h) as r:
            assert r.status == 200
        async with s.get(f"{fake_github.url}/repos/octo/b", headers=h) as r:
            assert r.status == 404
        async with s.post(f"{fake_github.url}/app/installations/{inst.id}/access_tokens",
                          headers={"Authorization": f"Bearer {_jwt(fake_github)}"},
                          json={"permissions": {"administration": "write"}}) as r:
            assert r.status == 422
