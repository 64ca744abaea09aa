"""Landing paths (urlpath, labpath, filepath) stay on the user's own server (issue 11, item 11)."""
from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest

from launcher.spec import SpecError, server_url, url_path_from_query
from tests.real_hub import free_port, parse_sse

SERVER = server_url("http://hub.example/", "octo-demo-abcdefgh")


@pytest.mark.parametrize("query", [
    {"urlpath": "../octo-other-12345678/lab"},
    {"urlpath": "/../../hub/admin"},
    {"urlpath": "%2e%2e/octo-other-12345678/"},
    {"urlpath": "%2E%2E/octo-other-12345678/"},
    {"urlpath": ".%2e/x"},
    {"urlpath": "%252e%252e/x"},  # double-encoded
    {"urlpath": "lab/../../x"},
    {"urlpath": "a/%2e%2e%2f%2e%2e/x"},  # an encoded separator hiding the dot segments
    {"urlpath": "..\\x"},  # browsers read '\' as '/'
    {"urlpath": ".%09./x"},  # browsers drop tabs and newlines from URLs
    {"filepath": "../../other/x.ipynb"},
    {"filepath": "%2e%2e/%2e%2e/%2e%2e/x"},
    {"labpath": "../../../x.ipynb"},
    {"labpath": "a\\..\\..\\..\\..\\x"},
])
def test_paths_that_leave_the_users_server_are_refused(query):
    with pytest.raises(SpecError):
        url_path_from_query(query)


@pytest.mark.parametrize("query,expected", [
    ({"urlpath": "lab/../tree/"}, "tree/"),
    ({"urlpath": "lab/./tree//x.ipynb"}, "lab/tree/x.ipynb"),
    ({"urlpath": "lab/.."}, ""),
    ({"urlpath": "voila/render/a.ipynb?back=../../x"}, "voila/render/a.ipynb?back=../../x"),  # a query is no path
    ({"filepath": "docs/../intro.ipynb"}, "tree/intro.ipynb"),
    ({"labpath": "x/%2e%2e/y.ipynb"}, "doc/tree/y.ipynb"),
])
def test_dot_segments_inside_the_server_are_resolved(query, expected):
    assert url_path_from_query(query) == expected


@pytest.mark.parametrize("raw", ["lab", "tree/a/../b", "doc/tree/x%20y.ipynb", "a/./b/", "voila/render/x?y=1#z"])
def test_the_redirect_stays_under_the_server_after_a_browser_normalises_it(raw):
    # the progress page appends the landing path to the server's base URL, as BinderHub's page does
    url = SERVER.rstrip("/") + "/" + url_path_from_query({"urlpath": raw})
    # what a browser would request: urlsplit does not resolve dots, so resolve them the browser's way
    path = urlsplit(url).path
    segments: list[str] = []
    for seg in path.split("/"):
        if seg.lower() in ("..", "%2e%2e", ".%2e", "%2e."):
            segments.pop()
        elif seg.lower() not in (".", "%2e"):
            segments.append(seg)
    assert "/".join(segments).startswith(urlsplit(SERVER).path.rstrip("/"))


async def test_launch_links_with_a_path_out_of_the_server_get_a_400(launcher):
    ln = await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api")
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    for param in ("urlpath", "filepath", "labpath"):
        bad = quote("%2e%2e/%2e%2e/%2e%2e/%2e%2e/octo-other-12345678/", safe="")
        resp = await ln.client.get(f"/v2/gh/octo/demo/main?{param}={bad}")
        assert resp.status == 400, param
        assert "leaves your own server" in await resp.text()
        resp = await ln.client.get(f"/api/events/gh/octo/demo/main?{param}={bad}")
        (event,) = parse_sse(await resp.text())
        assert event["phase"] == "failed" and event["status_code"] == 400, param
    assert ln.state.launches._by_id == {}  # nothing was reserved or started
