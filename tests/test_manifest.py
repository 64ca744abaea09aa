"""app.yml, the manifest conversion against FakeGitHub, and the stored credentials."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.config import ConfigError, Settings, load_settings
from bot.github import manifest as mf
from bot.github.client import RetryPolicy
from tests.fake_github import DEFAULT_EVENTS, DEFAULT_PERMISSIONS, Fault

ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(attempts=3, backoff=0.01, timeout=2)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


# --- app.yml -----------------------------------------------------------------------

def test_app_yml_is_the_packaged_manifest():
    top = yaml.safe_load((ROOT / "app.yml").read_text())
    assert yaml.safe_load((ROOT / "bot" / "app.yml").read_text()) == top  # bot/app.yml ships it in wheels
    assert top["default_permissions"] == {
        "metadata": "read", "contents": "read", "pull_requests": "write", "checks": "write",
        "statuses": "write", "issues": "write"}
    assert top["default_events"] == ["push", "pull_request", "check_run", "issue_comment", "repository"]
    # FakeGitHub grants installations exactly what the manifest asks for
    assert top["default_permissions"] == DEFAULT_PERMISSIONS and top["default_events"] == DEFAULT_EVENTS


def test_manifest_fills_public_url():
    m = mf.manifest(Settings(public_url="https://binder.example.org/"))
    assert m["url"] == "https://binder.example.org"
    assert m["hook_attributes"] == {"url": "https://binder.example.org/webhooks/github", "active": True}
    assert m["redirect_url"] == "https://binder.example.org/setup/callback"
    assert "{PUBLIC_URL}" not in json.dumps(m)
    assert {"name", "url", "hook_attributes", "redirect_url", "public", "default_permissions",
            "default_events"} <= set(m)


def test_manifest_overrides_from_the_form():
    m = mf.manifest(Settings(), name="  my-binder  ", public=True)
    assert m["name"] == "my-binder" and m["public"] is True


@pytest.mark.parametrize("api, web", [
    ("https://api.github.com", "https://github.com"),
    ("https://api.github.com/", "https://github.com"),
    ("https://ghes.corp.example/api/v3", "https://ghes.corp.example"),
    ("https://ghes.corp.example/api/v3/", "https://ghes.corp.example"),
    ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
])
def test_web_url(api, web):
    assert mf.web_url(api) == web


def test_registration_urls():
    s = Settings(github_api_url="https://ghes.corp.example/api/v3")
    assert mf.registration_url(s, state="abc") == "https://ghes.corp.example/settings/apps/new?state=abc"
    assert mf.registration_url(Settings(), state="s", org="binder-examples") == \
        "https://github.com/organizations/binder-examples/settings/apps/new?state=s"
    with pytest.raises(mf.ManifestError):
        mf.registration_url(Settings(), state="s", org="../evil")


# --- conversion ----------------------------------------------------------------------

async def test_convert_stores_credentials_mode_0600(fake_github, session, tmp_path):
    settings = Settings(github_api_url=fake_github.url, data_dir=tmp_path)
    code, app = fake_github.add_manifest_code()
    summary = await mf.convert(session, settings, code)
    assert summary == {"id": fake_github.app_id, "slug": fake_github.app_slug, "name": fake_github.app_slug,
                       "html_url": app["html_url"], "owner": "octocat"}
    [req] = fake_github.calls("POST", "/app-manifests/{code}/conversions")
    assert req.path == f"/app-manifests/{code}/conversions" and "authorization" not in req.headers
    key, creds = tmp_path / "github-app.pem", tmp_path / "github-app.json"
    assert mode(key) == 0o600 and mode(creds) == 0o600
    assert key.read_text() == fake_github.private_key
    stored = json.loads(creds.read_text())
    assert stored["id"] == fake_github.app_id and stored["webhook_secret"] == fake_github.webhook_secret
    assert stored["client_id"] and stored["client_secret"] and "pem" not in stored
    loaded = mf.load_stored_credentials(tmp_path)
    assert loaded["pem"] == fake_github.private_key


async def test_next_start_uses_the_stored_credentials(fake_github, session, tmp_path):
    code, _ = fake_github.add_manifest_code()
    await mf.convert(session, Settings(github_api_url=fake_github.url, data_dir=tmp_path), code)
    settings = load_settings({"DATA_DIR": str(tmp_path), "GITHUB_API_URL": fake_github.url})
    assert settings.github_app_id == str(fake_github.app_id)
    assert settings.github_private_key == fake_github.private_key
    assert settings.github_webhook_secret == fake_github.webhook_secret
    assert settings.has_app_credentials


async def test_a_used_or_unknown_code_is_a_clear_error(fake_github, session, tmp_path):
    settings = Settings(github_api_url=fake_github.url, data_dir=tmp_path)
    code, _ = fake_github.add_manifest_code()
    await mf.convert(session, settings, code)
    (tmp_path / "github-app.json").unlink()
    with pytest.raises(mf.ManifestError) as e:
        await mf.convert(session, settings, code)  # codes are single use
    assert "expired" in str(e.value) and e.value.status == 400


async def test_malformed_code_is_refused_without_a_request(fake_github, session, tmp_path):
    settings = Settings(github_api_url=fake_github.url, data_dir=tmp_path)
    for bad in ("", "../../app", "a b", "x" * 500):
        with pytest.raises(mf.ManifestError):
            await mf.convert(session, settings, bad)
    assert fake_github.requests == []


async def test_existing_credentials_are_not_overwritten(fake_github, session, tmp_path):
    settings = Settings(github_api_url=fake_github.url, data_dir=tmp_path)
    code1, _ = fake_github.add_manifest_code()
    await mf.convert(session, settings, code1)
    before = (tmp_path / "github-app.json").read_text()
    code2, _ = fake_github.add_manifest_code(id=999)
    with pytest.raises(mf.ManifestError) as e:
        await mf.convert(session, settings, code2)
    assert e.value.status == 409
    assert (tmp_path / "github-app.json").read_text() == before


async def test_conversion_retries_a_5xx_and_logs_no_code(fake_github, session, tmp_path, caplog):
    settings = Settings(github_api_url=fake_github.url, data_dir=tmp_path)
    code, app = fake_github.add_manifest_code()
    fake_github.inject("POST", "/app-manifests/{code}/conversions", Fault.server_error(502))
    caplog.set_level("DEBUG")
    await mf.convert(session, settings, code, policy=FAST)
    assert [r.status for r in fake_github.calls("POST", "/app-manifests/{code}/conversions")] == [502, 201]
    assert "502 on POST" in caplog.text
    for secret in (code, app["webhook_secret"], app["client_secret"], "PRIVATE KEY"):
        assert secret not in caplog.text


def test_no_stored_credentials(tmp_path):
    assert mf.load_stored_credentials(tmp_path) is None


def test_a_broken_credentials_file_is_a_config_error(tmp_path):
    (tmp_path / "github-app.json").write_text("{not json")
    with pytest.raises(ConfigError):
        mf.load_stored_credentials(tmp_path)
    (tmp_path / "github-app.json").write_text(json.dumps({"id": 1, "webhook_secret": "x"}))
    with pytest.raises(ConfigError):  # the key file is missing
        mf.load_stored_credentials(tmp_path)


def test_store_refuses_an_answer_without_a_key(tmp_path):
    with pytest.raises(mf.ManifestError):
        mf.store_credentials(tmp_path, {"id": 1, "webhook_secret": "s"})
    assert not (tmp_path / "github-app.json").exists()
