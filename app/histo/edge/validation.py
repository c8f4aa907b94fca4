"""Strict request validation against the schemas of the OpenAPI document (edge/openapi.py): the
handlers validate with the very schema objects the document publishes, so the two cannot drift.

A small JSON Schema validator for the keywords those schemas use (type, required, properties,
additionalProperties, minLength, maxLength, pattern, enum, const, minimum, maximum); any other
keyword in a schema given to it is an error, not silently ignored. tests/unit/test_edge_validation.py
holds it equal to a reference implementation (jsonschema_rs) on generated values. A refusal is a 400
with the JSON error body (`bad_request`) naming the first offending field.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from aiohttp import web

from .middleware import json_error

Schema = Mapping[str, Any]
KEYWORDS = {"type", "required", "properties", "additionalProperties", "minLength", "maxLength", "pattern", "enum",
            "const", "minimum", "maximum", "description", "examples", "default"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
# A query parameter of type number: plain decimal notation (no nan, inf, hex or underscores).
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _matches(pattern: str, value: str) -> bool:
    """A pattern of the form ^...$ without alternation: there ECMA 262 (JSON Schema's dialect) and
    Python agree, but Python's $ also matches before a final newline, so the whole string must match."""
    if not (pattern.startswith("^") and pattern.endswith("$")) or "|" in pattern:
        raise ValueError(f"validation.py handles only ^...$ patterns without alternation: {pattern}")
    return re.fullmatch(pattern[1:-1], value) is not None


def problem(schema: Schema, value: Any, where: str = "body") -> str | None:
    """Why `value` does not match `schema` (the first reason found), or None when it does."""
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"validation.py does not implement {sorted(unknown)} (at {where})")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return f"{where} must be of type {' or '.join(kinds)}"
    if "const" in schema and not _equal(value, schema["const"]):
        return f"{where} must be {json.dumps(schema['const'])}"
    if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
        return f"{where} must be one of {', '.join(json.dumps(e) for e in schema['enum'])}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{where} must be at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where} must be at most {schema['maxLength']} characters"
        if "pattern" in schema and not _matches(schema["pattern"], value):
            return f"{where} must match {schema['pattern']}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} must be at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} must be at most {schema['maximum']}"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return f"{where}.{name} is required"
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                why = problem(props[name], item, f"{where}.{name}")
                if why:
                    return why
            elif schema.get("additionalProperties", True) is False:
                return f"{where}: unknown field {json.dumps(name)[:80]}"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text_ok(value: Any) -> bool:
    """No lone surrogate anywhere (JSON escapes can make one; it is not text and cannot be stored)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def json_body(raw: bytes, schema: Schema, usage: str) -> Any:
    """The request body, parsed and validated; else a 400 `bad_request` (raise it) saying `usage` and why."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise json_error(400, "bad_request", f"the body is not JSON; send {usage}") from None
    why = problem(schema, value) or (None if _text_ok(value) else "body holds a lone surrogate (not text)")
    if why:
        raise json_error(400, "bad_request", f"{why}; send {usage}")
    return value


def query_number(request: web.Request, name: str, schema: Schema) -> float | None:
    """A query parameter of type number (None when absent), validated; else a 400 `bad_request`."""
    raw = request.query.get(name)
    if raw is None:
        return None
    value = float(raw) if _NUMBER.fullmatch(raw) else math.nan
    why = f"{name} must be a number" if math.isnan(value) or math.isinf(value) else problem(schema, value, name)
    if why:
        raise json_error(400, "bad_request", why)
    return value
