"""The OpenAPI document covers DESIGN.md's public API and hangs together."""
import json
import re
from pathlib import Path

from histo.edge.openapi import spec

DESIGN = Path(__file__).resolve().parents[3] / "shared" / "DESIGN.md"
# the public API table of DESIGN.md, as of this writing (the test also reads the file when present)
API = {("get", "/healthz"), ("get", "/readyz"), ("post", "/api/v1/jobs"), ("get", "/api/v1/jobs"),
       ("get", "/api/v1/jobs/{id}"), ("get", "/api/v1/jobs/{id}/result"), ("get", "/api/v1/jobs/{id}/histogram"),
       ("get", "/api/v1/jobs/{id}/histogram.png"), ("get", "/api/v1/cluster"), ("get", "/api/v1/events")}


def design_operations():
    ops = set(API)
    if DESIGN.exists():
        for method, paths in re.findall(r"^\| (GET|POST|PUT|DELETE) ([^|]+?) \|", DESIGN.read_text(), re.M):
            for p in paths.split(","):
                p = p.strip()
                ops.add((method.lower(), p if p.startswith("/") else "/" + p))
    return ops


def test_is_openapi_31_and_json():
    s = spec()
    assert s["openapi"] == "3.1.0" and s["info"]["title"] and s["info"]["version"]
    assert json.loads(json.dumps(s)) == s
    assert s["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "role claim: uploader, viewer or admin"}


def test_every_design_operation_is_described():
    s = spec()
    for method, path in design_operations():
        if path == "/":
            assert s["x-ui"]["page"] == "/"  # the UI page is named, not an API operation
            continue
        if (method, path) == ("get", "/api/v1/events"):  # the WebSocket: not an HTTP operation
            assert path in s["x-websockets"] and method not in s["paths"][path]
            continue
        assert method in s["paths"].get(path, {}), (method, path)
    assert "/api/v1/openapi.json" in s["paths"]


def test_upload_is_multipart_with_image_and_mode():
    op = spec()["paths"]["/api/v1/jobs"]["post"]
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["image"]
    assert schema["properties"]["mode"]["enum"] == ["gray", "luma", "rgb"]
    assert schema["properties"]["mode"]["default"] == "luma"
    assert set(op["responses"]) >= {"202", "400", "401", "403", "413", "415", "429", "503"}


def test_errors_use_the_error_schema_and_refs_resolve():
    s = spec()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(s)))
    assert refs <= set(s["components"]["schemas"]), refs - set(s["components"]["schemas"])
    for path, item in s["paths"].items():
        for method, op in item.items():
            assert op.get("operationId") and "responses" in op, (method, path)
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":  # readyz: 503 is a Health doc
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            if "{id}" in path:
                assert any(p["name"] == "id" and p["in"] == "path" and p["required"] for p in op["parameters"])
                assert "404" in op["responses"]
    ids = [op["operationId"] for item in s["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_response_shapes_match_what_the_master_sends():
    schemas = spec()["components"]["schemas"]
    job = schemas["Job"]["properties"]
    assert set(job) == {"id", "owner", "state", "mode", "format", "width", "height", "progress", "tiles", "reason",
                        "timings", "created", "finished"}
    assert job["state"]["enum"] == ["queued", "running", "done", "failed"]
    assert set(schemas["Cluster"]["properties"]) >= {"leader", "masters", "workers"}
    assert set(schemas["Histogram"]["required"]) == {"channels", "before", "after"}
    assert schemas["Health"]["properties"]["status"]["enum"][:2] == ["ok", "degraded"]
    assert schemas["WsAuth"]["properties"]["type"] == {"const": "auth"}
    ws = spec()["x-websockets"]["/api/v1/events"]
    assert ws["client"] == [{"$ref": "#/components/schemas/WsAuth"}] and set(ws["close"]) == {"4401", "1013"}


def test_callers_get_their_own_copy():
    a = spec()
    a["paths"].clear()
    assert spec()["paths"]
