"""The document cannot drift from the handlers: the request schemas the handlers validate with are the
published ones (the same objects), and histo's validator (edge/validation.py) accepts exactly what a
reference JSON Schema implementation (jsonschema_rs, Draft 2020-12, which Schemathesis uses) accepts."""
from __future__ import annotations

import json
import math
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings, strategies as st

from histo.edge import openapi, validation
from histo.master import api

SCHEMAS = {"RevokeRequest": openapi.REVOKE_REQUEST, "DrillEvent": openapi.DRILL_EVENT}


def test_the_handlers_validate_with_the_published_schemas() -> None:
    s = openapi.spec()
    for name, schema in SCHEMAS.items():
        assert s["components"]["schemas"][name] == schema
    ops = s["paths"]
    body = ops["/api/v1/tokens/revoke"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RevokeRequest"}
    body = ops["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/DrillEvent"}
    wait, = (p for p in ops["/api/v1/jobs/{id}"]["get"]["parameters"] if p["name"] == "wait")
    assert wait["schema"] == openapi.WAIT
    # the very objects, imported by the handlers' module
    assert api.REVOKE_REQUEST is openapi.REVOKE_REQUEST and api.DRILL_EVENT is openapi.DRILL_EVENT
    assert api.WAIT is openapi.WAIT
    # every route that validates a body documents the 400 it answers
    for path, method in (("/api/v1/tokens/revoke", "post"), ("/api/v1/events", "post"), ("/api/v1/jobs/{id}", "get")):
        assert "400" in ops[path][method]["responses"], (method, path)


def _near(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Objects shaped like `schema` (its fields, sometimes wrong, sometimes missing, sometimes extra)."""
    scalars = (st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=90) | st.from_regex(r"[A-Za-z0-9_-]{0,70}\n?", fullmatch=True))
    fields = {name: scalars | st.text(min_size=75, max_size=520) for name in schema["properties"]}
    return st.fixed_dictionaries({}, optional={**fields, "extra": scalars}) | scalars | st.lists(scalars, max_size=3)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_validator_agrees_with_the_reference_implementation(name: str) -> None:
    schema = SCHEMAS[name]
    reference = jsonschema_rs.Draft202012Validator(schema)

    @settings(max_examples=400, deadline=None, database=None)
    @given(_near(schema))
    def agree(value: object) -> None:
        assert (validation.problem(schema, value) is None) == reference.is_valid(value), value
    agree()


@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**6, 10**6), st.booleans(),
                 st.none()))
@settings(max_examples=300, deadline=None, database=None)
def test_wait_validator_agrees(value: object) -> None:
    assert (validation.problem(openapi.WAIT, value) is None) == jsonschema_rs.is_valid(openapi.WAIT, value)


def test_a_schema_keyword_the_validator_does_not_know_is_an_error_not_ignored() -> None:
    with pytest.raises(ValueError, match="does not implement"):
        validation.problem({"type": "object", "maxProperties": 3}, {})
    with pytest.raises(ValueError, match="alternation"):
        validation.problem({"type": "string", "pattern": "^a|b$"}, "a")


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b'{"jti": "a", "exp": NaN}', b'{"jti": "a", "exp": Infinity}',
                                 b'{"jti": ""}', b'{"jti": "a\\n"}', b'{"jti": "a", "exp": false}',
                                 b'{"jti": "a", "exp": 1e400}', b'{"jti": "a", "extra": 1}', b'[]', b'"a"',
                                 b'{"jti": "\\ud800"}'])
def test_bad_bodies_are_400_with_the_json_error(raw: bytes) -> None:
    with pytest.raises(web.HTTPBadRequest) as err:
        validation.json_body(raw, openapi.REVOKE_REQUEST, "a RevokeRequest")
    body = json.loads(err.value.text or "")
    assert body["error"] == "bad_request" and body["message"]


def test_good_body_passes() -> None:
    assert validation.json_body(b'{"jti": "abc-_1", "exp": 1796172801}', openapi.REVOKE_REQUEST, "x") == {
        "jti": "abc-_1", "exp": 1796172801}


@pytest.mark.parametrize("raw,ok", [("0", True), ("2.5", True), ("60", True), ("1e1", True), ("-1", False),
                                    ("61", False), ("nan", False), ("inf", False), ("0x10", False), ("1_0", False),
                                    ("", False), (" 1", False), ("1e400", False)])
def test_wait_query(raw: str, ok: bool) -> None:
    request = make_mocked_request("GET", f"/api/v1/jobs/x?wait={raw}")
    if ok:
        value = validation.query_number(request, "wait", openapi.WAIT)
        assert value is not None and math.isfinite(value)
    else:
        with pytest.raises(web.HTTPBadRequest):
            validation.query_number(request, "wait", openapi.WAIT)
    assert validation.query_number(make_mocked_request("GET", "/x"), "wait", openapi.WAIT) is None
