"""GET / (setup or status) and the manifest flow's callback, against FakeGitHub."""
from __future__ import annotations

import html
import json
import re
import stat
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.github.client import GitHubApp, RetryPolicy
from bot.github.installations import stop_refresh
from bot.model import BuildRequest
from bot.web import pages


@pytest.fixture
def page_client(aiohttp_client):
    async def make(services):
        app = web.Application()

        async def ctx(app):
            app[SERVICES] = services
            yield
            await stop_refresh(services)

        app.cleanup_ctx.append(ctx)
        pages.setup(app)
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def bare_services(make_services, fake_github):
    """No App credentials yet: what a first `serve` has."""
    return await make_services(github_webhook_secret=None, github_api_url=fake_github.url,
                               public_url="http://binder.example.org")


async def as_operator(client) -> None:
    """Open the setup link from the service's log: the one-time token moves into a cookie."""
    token = client.app[pages.SETUP_TOKEN][0]
    resp = await client.get("/", params={"token": token}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"


def form_of(text: str) -> tuple[str, dict]:
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', text).group(1))
    value = html.unescape(re.search(r'name="manifest" value="([^"]*)"', text).group(1))
    return action, json.loads(value)


def assert_no_secrets(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text
    assert "PRIVATE KEY" not in text


async def test_setup_page_offers_registration(bare_services, page_client, fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    resp = await client.get("/")
    assert resp.status == 200
    text = await resp.text()
    assert "Register GitHub App" in text
    action, manifest = form_of(text)
    assert action.startswith(f"{fake_github.web_url}/settings/apps/new?state=")
    assert manifest["hook_attributes"]["url"] == "http://binder.example.org/webhooks/github"
    assert manifest["redirect_url"] == "http://binder.example.org/setup/callback"
    state = parse_qs(urlsplit(action).query)["state"][0]
    assert resp.cookies[pages.STATE_COOKIE].value == state
    assert resp.headers["Cache-Control"] == "no-store"


async def test_state_cookie_is_secure_behind_https(make_services, page_client, fake_github):
    services = await make_services(github_webhook_secret=None, github_api_url=fake_github.url,
                                   public_url="https://binder.example.org")
    client = await page_client(services)
    token = client.app[pages.SETUP_TOKEN][0]
    first = await client.get("/", params={"token": token}, allow_redirects=False)
    token_cookie = first.headers["Set-Cookie"]
    assert "Secure" in token_cookie and "HttpOnly" in token_cookie and "SameSite=Lax" in token_cookie
    # (the test client speaks http, so its jar would not send a Secure cookie back)
    resp = await client.get("/", headers={"Cookie": f"{pages.TOKEN_COOKIE}={token}"})
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_setup_page_for_an_organization(bare_services, page_client, fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    token = client.app[pages.SETUP_TOKEN][0]
    text = await (await client.post("/setup", data={"org": "binder-examples", "name": "my-binder", "public": "on",
                                                    "token": token})).text()
    action, manifest = form_of(text)
    assert action.startswith(f"{fake_github.web_url}/organizations/binder-examples/settings/apps/new?state=")
    assert manifest["name"] == "my-binder" and manifest["public"] is True


async def test_setup_page_refuses_a_bad_org_and_escapes_it(bare_services, page_client):
    client = await page_client(bare_services)
    await as_operator(client)
    resp = await client.post("/setup", data={"org": "<script>alert(1)</script>",
                                             "token": client.app[pages.SETUP_TOKEN][0]})
    assert resp.status == 400
    text = await resp.text()
    assert "<script>alert" not in text and "&lt;script&gt;" in text


async def test_loopback_public_url_is_warned_about(make_services, page_client, fake_github):
    services = await make_services(github_webhook_secret=None, github_api_url=fake_github.url,
                                   public_url="http://127.0.0.1:8080")
    client = await page_client(services)
    await as_operator(client)
    text = await (await client.get("/")).text()
    assert "loopback" in text


async def test_full_registration_flow(bare_services, page_client, fake_github, tmp_path):
    client = await page_client(bare_services)
    await as_operator(client)
    action, _ = form_of(await (await client.get("/")).text())
    state = parse_qs(urlsplit(action).query)["state"][0]
    code, app = fake_github.add_manifest_code()  # what GitHub does when the user confirms

    resp = await client.get("/setup/callback", params={"code": code, "state": state})
    text = await resp.text()
    assert resp.status == 200, text
    assert "registered" in text and fake_github.app_slug in text
    assert_no_secrets(text, app["webhook_secret"], app["client_secret"])
    data_dir = bare_services.settings.data_dir
    assert stat.S_IMODE((data_dir / "github-app.pem").stat().st_mode) == 0o600
    # applied to this process at once
    assert bare_services.settings.has_app_credentials
    assert bare_services.settings.github_webhook_secret == app["webhook_secret"]
    assert isinstance(bare_services.github, GitHubApp)
    # and / is now the status page
    status = await (await client.get("/")).text()
    assert "Register GitHub App" not in status and "Installations" in status
    assert client.app[pages.SETUP_TOKEN] == []  # the token was one-time
    assert_no_secrets(status, app["webhook_secret"], app["client_secret"])


async def test_callback_with_an_unknown_state_converts_nothing(bare_services, page_client, fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    await client.get("/")
    code, _ = fake_github.add_manifest_code()
    resp = await client.get("/setup/callback", params={"code": code, "state": "forged"})
    assert resp.status == 400
    assert fake_github.calls("POST", "/app-manifests/{code}/conversions") == []
    assert not (bare_services.settings.data_dir / "github-app.json").exists()


async def test_state_is_single_use_and_bound_to_the_browser(bare_services, page_client, fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    action, _ = form_of(await (await client.get("/")).text())
    state = parse_qs(urlsplit(action).query)["state"][0]
    code, _ = fake_github.add_manifest_code()
    token_cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[pages.TOKEN_COOKIE]
    client.session.cookie_jar.clear()  # another browser (even one holding the setup token)
    client.session.cookie_jar.update_cookies({pages.TOKEN_COOKIE: token_cookie.value})
    resp = await client.get("/setup/callback", params={"code": code, "state": state})
    assert resp.status == 400
    assert fake_github.calls("POST", "/app-manifests/{code}/conversions") == []


async def test_expired_code_shows_an_error_not_a_crash(bare_services, page_client, fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    action, _ = form_of(await (await client.get("/")).text())
    state = parse_qs(urlsplit(action).query)["state"][0]
    resp = await client.get("/setup/callback", params={"code": "deadbeef", "state": state})
    assert resp.status == 400
    assert "expired" in await resp.text()
    assert not bare_services.settings.has_app_credentials


async def test_callback_when_already_configured(make_services, page_client, github_settings):
    services = await make_services(**vars(github_settings()))
    resp = await (await page_client(services)).get("/setup/callback", params={"code": "abc", "state": "x"})
    assert resp.status == 409


async def test_status_page_shows_app_installations_deliveries_builds(make_services, page_client, fake_github,
                                                                     github_settings):
    # LAUNCH_ALLOW lists them: shown without asking GitHub (tests/test_private_repos.py covers the rest)
    services = await make_services(**vars(github_settings(launch_allow=("binder-examples/*",))))
    services.github = GitHubApp(services.session, services.settings)
    await services.gh_state.upsert_installation(11, "binder-examples", "Organization")
    await services.gh_state.add_repos(11, [("binder-examples/requirements", False)])
    await services.gh_state.upsert_installation(12, "sleepy", "User", suspended=True)
    await services.deliveries.add("72d3162e-cc78-11e3-81ab-4c9367dc0958", "push", {"x-github-event": "push"},
                                  b"{}", repo="binder-examples/<b>requirements</b>")
    await services.builds.create(BuildRequest(owner="binder-examples", repo="requirements", sha="a" * 40,
                                              clone_url="https://github.com/binder-examples/requirements"),
                                 "binder-prebuild/binder-2dexamples-2drequirements-55ab5c:" + "a" * 40)
    resp = await (await page_client(services)).get("/")
    text = await resp.text()
    assert resp.status == 200
    assert fake_github.app_slug in text  # from GET /app
    assert "binder-examples" in text and "suspended" in text
    assert "72d3162e-cc78-11e3-81ab-4c9367dc0958" in text and "&lt;b&gt;requirements" in text
    assert "aaaaaaaaaaaa" in text
    assert_no_secrets(text, fake_github.webhook_secret)


async def test_status_page_renders_when_github_is_down(make_services, page_client, fake_github, github_settings):
    services = await make_services(**vars(github_settings(github_api_url="http://127.0.0.1:9")))
    services.github = GitHubApp(services.session, services.settings, policy=RetryPolicy(attempts=1))
    resp = await (await page_client(services)).get("/")
    assert resp.status == 200
    assert f"id {fake_github.app_id}" in await resp.text()


# ------------------------------------------------------------------ the setup page belongs to the operator (issue 11 item 7)


async def test_the_setup_link_with_its_token_is_logged_at_start(bare_services, page_client, caplog):
    caplog.set_level("WARNING", logger="bot.web.pages")
    client = await page_client(bare_services)
    token = client.app[pages.SETUP_TOKEN][0]
    assert len(token) >= 32
    assert f"http://binder.example.org/?token={token}" in caplog.text


async def test_no_token_is_made_or_logged_when_credentials_exist(make_services, page_client, github_settings,
                                                                 caplog):
    caplog.set_level("WARNING", logger="bot.web.pages")
    client = await page_client(await make_services(**vars(github_settings())))
    assert client.app[pages.SETUP_TOKEN] == [] and "token=" not in caplog.text


@pytest.mark.parametrize("query", [{}, {"token": "guess"}, {"token": ""},
                                   {"name": "evil", "public": "on", "org": "binder-examples"}])
async def test_a_visitor_without_the_token_gets_no_setup_page(bare_services, page_client, query):
    client = await page_client(bare_services)
    resp = await client.get("/", params=query, allow_redirects=False)
    assert resp.status == 403
    text = await resp.text()
    assert "Register GitHub App" not in text and "manifest" not in text
    assert pages.STATE_COOKIE not in resp.cookies and pages.TOKEN_COOKIE not in resp.cookies
    assert len(client.app[pages.SETUP_STATES]) == 0


async def test_a_stranger_cannot_complete_a_registration(bare_services, page_client, fake_github, aiohttp_client):
    """First callback no longer wins: the callback needs the operator's token cookie."""
    client = await page_client(bare_services)
    await as_operator(client)
    action, _ = form_of(await (await client.get("/")).text())
    state = parse_qs(urlsplit(action).query)["state"][0]
    code, _ = fake_github.add_manifest_code()  # the stranger registered their own App on GitHub
    stranger = client.session.cookie_jar.filter_cookies(client.make_url("/"))[pages.STATE_COOKIE].value
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({pages.STATE_COOKIE: stranger})  # even with a leaked state
    resp = await client.get("/setup/callback", params={"code": code, "state": state})
    assert resp.status == 403
    assert fake_github.calls("POST", "/app-manifests/{code}/conversions") == []
    assert not bare_services.settings.has_app_credentials


async def test_page_views_cannot_evict_the_operators_pending_state(bare_services, page_client, fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    action, _ = form_of(await (await client.get("/")).text())
    state = parse_qs(urlsplit(action).query)["state"][0]
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    client.session.cookie_jar.clear()
    for _ in range(300):  # anonymous views
        assert (await client.get("/")).status == 403
    client.session.cookie_jar.update_cookies({k: v.value for k, v in jar.items()})
    code, _ = fake_github.add_manifest_code()
    resp = await client.get("/setup/callback", params={"code": code, "state": state})
    assert resp.status == 200, await resp.text()
    assert bare_services.settings.has_app_credentials


async def test_name_owner_and_visibility_come_only_from_the_operators_form(bare_services, page_client,
                                                                           fake_github):
    client = await page_client(bare_services)
    await as_operator(client)
    # a link (even one the operator follows, cookie and all) cannot choose them
    text = await (await client.get("/", params={"name": "evil", "public": "on", "org": "evil-org"})).text()
    action, manifest = form_of(text)
    assert manifest["public"] is False and manifest["name"] != "evil"
    assert action.startswith(f"{fake_github.web_url}/settings/apps/new?")
    # a form posted from elsewhere carries no token
    resp = await client.post("/setup", data={"name": "evil", "public": "on"})
    assert resp.status == 403
    # the operator's own form does
    token = client.app[pages.SETUP_TOKEN][0]
    _, manifest = form_of(await (await client.post("/setup", data={"name": "mine", "public": "on",
                                                                   "token": token})).text())
    assert manifest["name"] == "mine" and manifest["public"] is True


async def test_setup_and_status_pages_say_how_to_try_it_without_an_app(make_services, page_client, fake_github,
                                                                       github_settings):
    """No public URL, no App: the pages give the build command, the launch link and what LAUNCH_ALLOW serves."""
    allow = ("octo/demo", "org/*", "evil/<b>x</b>")
    bare = await make_services(github_webhook_secret=None, github_api_url=fake_github.url,
                               public_url="http://127.0.0.1:8080/", launch_allow=allow)
    configured = await make_services(**vars(github_settings(public_url="http://127.0.0.1:8080", launch_allow=allow)))
    configured.github = GitHubApp(configured.session, configured.settings)
    for services in (bare, configured):
        client = await page_client(services)
        if services is bare:
            await as_operator(client)  # the setup page is the operator's (the link from the log)
        text = await (await client.get("/")).text()
        assert "Try it without a GitHub App" in text
        assert "binder-prebuild build OWNER/REPO --ref main" in text and "LAUNCH_ALLOW=OWNER/REPO" in text
        assert "http://127.0.0.1:8080/v2/gh/OWNER/REPO/main" in text
        assert '<a href="http://127.0.0.1:8080/v2/gh/octo/demo/HEAD">octo/demo</a>' in text
        assert "<code>org/*</code>" in text  # a pattern: no link
        assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    empty = await make_services(github_webhook_secret=None, github_api_url=fake_github.url)
    client = await page_client(empty)
    await as_operator(client)
    text = await (await client.get("/")).text()
    assert "LAUNCH_ALLOW</code> is empty" in text


def test_launch_allow_links_only_for_exact_repositories():
    links = pages.launch_allow_links("http://h:1/", ("a/b", " c/* ", "", "d/e?x", "f/g h"))
    assert links == [{"name": "a/b", "url": "http://h:1/v2/gh/a/b/HEAD"}, {"name": "c/*", "url": None},
                     {"name": "d/e?x", "url": None}, {"name": "f/g h", "url": "http://h:1/v2/gh/f/g%20h/HEAD"}]
