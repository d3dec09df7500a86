"""Session-API bodies and query strings against a live gateway: the code and its OpenAPI
description agree on what a valid create body is, and nothing gets a 5xx."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from gateway.openapi import spec
from gateway.resources import check
from tests.fuzz.conftest import LiveGateway, serve
from tests.fuzz.openapi_check import Spec
from tests.fuzz.strategies import create_bodies, query_strings, raw_bodies
from tests.gateway.conftest import TOKEN, bearer, make_config

@pytest.fixture(scope="module")
def api_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    # Its own gateway, whose sessions never need to run (their agent is `sleep`): random
    # bodies create, time out and re-create sessions without touching other tests' sessions.
    yield from serve(make_config(tmp_path_factory.mktemp("api")))


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def has_float(value: Any) -> bool:
    """Non-integral numbers: the gateway also takes 0.5 for a quantity; the description keeps to
    strings and integers, what clients should send."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    return False


def error_of(r: requests.Response) -> str:
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    message = r.json()["error"]
    assert isinstance(message, str) and message
    return message


def within_limits(body: Any) -> bool:
    """The description's schema plus the operator's per-tier maximums (not a schema matter)."""
    config = make_config(Path("."))
    try:
        check({k: str(v) for k, v in (body.get("resources") or {}).items()}, "standard",
              config.resource_limits)
    except (ValueError, AttributeError):
        return False
    return True


def test_create_bodies_follow_the_description(api_gateway: LiveGateway, tmp_path: Path) -> None:
    described = Spec(spec(make_config(tmp_path)))
    valid_create = described.validator(described.document["components"]["schemas"]["CreateSession"])
    http = requests.Session()

    @FUZZ
    @given(body=create_bodies)
    def run(body: Any) -> None:
        r = http.post(api_gateway.url + "/api/sessions", data=json.dumps(body),
                      headers={**bearer(), "Content-Type": "application/json"}, timeout=30)
        assert r.status_code in (200, 201, 400, 409, 429), r.text
        if r.status_code >= 400:
            error_of(r)
        if has_float(body):
            return
        assert (r.status_code != 400) == (valid_create.is_valid(body) and within_limits(body)), (
            body, r.text)
        if r.status_code < 300:
            assert r.json()["application"] == body["application"]
        described.check("POST", "/api/sessions", r.status_code, dict(r.headers), r.content)

    run()


def test_raw_bodies_are_rejected_clearly(api_gateway: LiveGateway) -> None:
    http = requests.Session()

    @FUZZ
    @given(body=raw_bodies)
    def run(body: bytes) -> None:
        r = http.post(api_gateway.url + "/api/sessions", data=body,
                      headers={**bearer(), "Content-Type": "application/json"}, timeout=30)
        assert r.status_code in (200, 201, 400, 409, 429), r.text
        if r.status_code >= 400:
            error_of(r)

    run()


def test_query_strings(api_gateway: LiveGateway) -> None:
    http = requests.Session()
    ids = api_gateway.session_ids() or ["s0000000000000000"]

    @FUZZ
    @given(query=query_strings)
    def run(query: dict[str, str]) -> None:
        qs = "?" + urlencode(query)
        for path in ("/api/sessions", f"/api/sessions/{ids[0]}", "/api/applications"):
            r = http.get(api_gateway.url + path + qs, headers=bearer(), timeout=30)
            assert r.status_code in (200, 404), r.text  # the query changes nothing
            if r.status_code == 404:
                error_of(r)
        page = http.get(api_gateway.url + "/" + qs, allow_redirects=False, timeout=30)
        if "token" not in query:
            assert page.status_code == 401  # no credentials: the sign-in page
        elif query["token"] == TOKEN:
            assert page.status_code == 303
            location = urlsplit(page.headers["Location"])
            assert location.path == "/" and "token" not in dict(parse_qsl(location.query))
        else:
            assert page.status_code == 401 and page.headers["Content-Type"].startswith("text/html")

    run()
