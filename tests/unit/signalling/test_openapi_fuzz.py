"""Schemathesis over the OpenAPI schema: no input makes the service fail with a server error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from signalling.service import create_app
from tests.unit.signalling.conftest import API_KEY, make_settings

app = create_app(make_settings(TOKEN_RATE_LIMIT_BURST=100_000, LIVEKIT_URL="ws://127.0.0.1:9"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.exclude(path_regex="^/api/admin").parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), "X-API-Key": API_KEY}
    case.call_and_validate(checks=[not_a_server_error])


@schema.include(path_regex="^/api/token").parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_without_key(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500
