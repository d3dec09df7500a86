"""Static files: nothing outside gateway/web can be read through /static/ (SECURITY.md §1)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import gateway.app as gateway_app
from gateway.app import WEB
from tests.security.conftest import Gateway, raw_get

GATEWAY_DIR = WEB.parent
# A line of gateway/app.py and of /etc/passwd: if either shows up in a body, a file escaped.
MARKERS = (b"def create_app", b"root:")

ESCAPES = [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/%2E%2E/app.py",
    "/static/..%2fapp.py",
    "/static/..%2Fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/..%5capp.py",
    "/static/....//app.py",
    "/static/%252e%252e/app.py",  # double encoding
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..;/app.py",
    "/static/%00../app.py",
    "/static/./../app.py",
]


@pytest.mark.parametrize("target", ESCAPES)
async def test_path_outside_static_folder_is_refused(gateway: Gateway, target: str) -> None:
    client = await gateway()
    status, body = await raw_get(client.port, target)
    assert status in (400, 403, 404), (target, status)
    assert not any(m in body for m in MARKERS), target


async def test_static_file_inside_folder_is_served(gateway: Gateway) -> None:
    client = await gateway()
    status, body = await raw_get(client.port, "/static/whep.js")
    assert status == 200
    assert body == (WEB / "whep.js").read_bytes()


async def test_static_route_does_not_follow_symlinks(gateway: Gateway, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A link inside the web folder to a file or folder outside it is not served. The links are
    planted in a copy of the folder (the app serves whatever `gateway.app.WEB` names), never in
    the source tree."""
    web = tmp_path / "web"
    shutil.copytree(WEB, web)
    monkeypatch.setattr(gateway_app, "WEB", web)
    client = await gateway()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for browsers")
    (web / "zz-escape-test.txt").symlink_to(secret)
    (web / "zz-escape-dir").symlink_to(GATEWAY_DIR, target_is_directory=True)
    (web / "zz-inside-link.js").symlink_to(web / "whep.js")  # even a link that stays inside
    for target in ("/static/zz-escape-test.txt", "/static/zz-escape-dir/app.py",
                   "/static/zz-escape-dir%2Fapp.py", "/static/zz-inside-link.js"):
        status, body = await raw_get(client.port, target)
        assert status == 404, target
        assert b"not for browsers" not in body and b"create_app" not in body
    status, body = await raw_get(client.port, "/static/whep.js")
    assert status == 200 and body == (web / "whep.js").read_bytes()  # the copy is what is served
    status, body = await raw_get(client.port, "/static/missing.js")
    assert status == 404 and b'"error"' in body


async def test_static_is_public_but_api_is_not(gateway: Gateway) -> None:
    """/static/ skips authentication by prefix: a traversal must not reach authenticated routes."""
    client = await gateway()
    for target in ("/static/../api/sessions", "/static/%2e%2e/api/sessions"):
        status, body = await raw_get(client.port, target)
        assert status in (401, 404), (target, status)
        assert b'"sessions"' not in body, target
