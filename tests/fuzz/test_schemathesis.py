"""schemathesis drives a live gateway from its own /api/openapi.json: schema-valid and invalid
requests for every operation, with real session ids mixed in, against real sessions (agents
streaming a light application). No 5xx; every answer is documented; every 4xx outside the
HTML pages is JSON `{"error": "…"}`."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (CheckContext, content_type_conformance, ignored_auth,
                                 negative_data_rejection, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance,
                                 status_code_conformance)
from schemathesis.core.transport import Response

from gateway.config import Config
from gateway.openapi import spec
from tests.fuzz.conftest import LiveGateway, live_config, serve
from tests.gateway.conftest import bearer

# SDP and trickle-ICE fragments are text, sent as they are.
schemathesis.serializer.alias(["application/sdp", "application/trickle-ice-sdpfrag"], "text/plain")

# The gateway's thread picks display numbers with `random` while hypothesis draws, which it warns of.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

EXAMPLES = 12  # per operation and mode: ~230 requests, seconds
PAGES = {"/", "/streaming/{id}/"}  # browsers get HTML pages, not JSON, for these


def rejections_are_json_errors(ctx: CheckContext, response: Response, case: Case) -> bool:
    """A 4xx says what was wrong, as the SPEC's error body (the HTML pages aside)."""
    if 400 <= response.status_code < 500 and case.operation.path not in PAGES:
        media = response.headers.get("content-type", [""])[0].split(";")[0]
        assert media == "application/json", f"{response.status_code} as {media!r}"
        body = json.loads(response.content)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, rejections_are_json_errors]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    # Its own gateway: creating and deleting sessions at random must not disturb other tests.
    yield from serve(live_config(tmp_path_factory.mktemp("schemathesis")))


@pytest.fixture(scope="module")
def schema(gateway: LiveGateway) -> Any:
    document = requests.get(gateway.url + "/api/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(document)


DOCUMENT = spec(Config())
# Schema-invalid requests exist only where the schema constrains something: JSON bodies
# (parameters and SDP bodies are any string).
CASES = [(f"{method.upper()} {path}", mode) for path, item in DOCUMENT["paths"].items()
         for method, op in item.items() if method != "parameters"
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE
         or "application/json" in op.get("requestBody", {}).get("content", {})]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{l} {m.value}" for l, m in CASES])
def test_operation(gateway: LiveGateway, schema: Any, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    # Real sessions exist, so that random requests reach real agents, not only 404s.
    gateway.request("POST", "/api/sessions", {"application": "gimp"})
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    if DOCUMENT["paths"][path][method.lower()].get("security") != []:  # not a public one
        checks.append(ignored_auth)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        ids = gateway.session_ids()
        if case.path_parameters and "id" in case.path_parameters and ids and data.draw(
                st.booleans()):
            case.path_parameters["id"] = data.draw(st.sampled_from(ids))
        response = case.call(base_url=gateway.url, headers=bearer(), timeout=60,
                             allow_redirects=False)
        case.validate_response(response, checks=checks, headers=bearer())

    run()
