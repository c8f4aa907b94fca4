"""The OpenAPI 3.1 description of the public API (served at /api/v1/openapi.json)."""
from __future__ import annotations


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


ERRORS = {"400": _err("bad request or bad image"), "401": _err("no or bad token"), "403": _err("wrong role"),
          "404": _err("unknown job, or another user's job"), "429": _err("rate limited"),
          "503": _err("not ready or no workers")}
JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"}}


def _job_get(summary: str, content: dict) -> dict:
    return {"get": {"summary": summary, "parameters": [JOB_ID], "security": [{"bearerAuth": []}],
                    "responses": {"200": {"description": "ok", "content": content},
                                  "409": _err("job not finished"), **ERRORS}}}


def spec() -> dict:
    job = {"type": "object", "properties": {
        "id": {"type": "string"}, "owner": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
        "mode": {"type": "string"}, "format": {"type": "string"}, "width": {"type": "integer"},
        "height": {"type": "integer"}, "progress": {"type": "number"}, "tiles": {"type": "integer"},
        "reason": {"type": ["string", "null"]}, "timings": {"type": "object"},
        "created": {"type": "number"}, "finished": {"type": ["number", "null"]}}}
    health = {"type": "object", "properties": {"status": {"type": "string"}, "checks": {"type": "object"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "histo", "version": "1.0.0",
                 "description": "Secured, distributed histogram equalization (see DESIGN.md)."},
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "Job": job,
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {
                "description": "alive", "content": {"application/json": {"schema": health}}}}}},
            "/readyz": {"get": {"summary": "readiness: ZooKeeper session, valid certificate, leader known",
                                "responses": {"200": {"description": "ready (status ok or degraded)",
                                                      "content": {"application/json": {"schema": health}}},
                                              "503": {"description": "not ready"}}}},
            "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "ok"}}}},
            "/api/v1/jobs": {
                "post": {"summary": "upload an image (uploader, admin)", "security": [{"bearerAuth": []}],
                         "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                             "type": "object", "required": ["image"], "properties": {
                                 "image": {"type": "string", "format": "binary"},
                                 "mode": {"type": "string", "enum": ["gray", "luma", "rgb"], "default": "luma"}}}}}},
                         "responses": {"202": {"description": "accepted", "content": {"application/json": {
                             "schema": {"type": "object", "properties": {"id": {"type": "string"},
                                                                         "state": {"type": "string"}}}}}},
                                       "413": _err("too large (bytes or pixels)"),
                                       "415": _err("not a JPEG or PNG"), **ERRORS}},
                "get": {"summary": "the caller's jobs (admin: all)", "security": [{"bearerAuth": []}],
                        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"jobs": {"type": "array",
                                                                      "items": {"$ref": "#/components/schemas/Job"}}}}}}},
                            **ERRORS}}},
            "/api/v1/jobs/{id}": {"get": {"summary": "state, progress, timings (owner, admin); ?wait=S long-polls "
                                                     "until the job ends (at most 60 s)",
                                          "parameters": [JOB_ID, {"name": "wait", "in": "query", "required": False,
                                                                  "schema": {"type": "number", "minimum": 0,
                                                                             "maximum": 60}}], "security": [{"bearerAuth": []}],
                                          "responses": {"200": {"description": "ok", "content": {"application/json": {
                                              "schema": {"$ref": "#/components/schemas/Job"}}}}, **ERRORS}}},
            "/api/v1/jobs/{id}/result": _job_get("the equalized image", {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}}),
            "/api/v1/jobs/{id}/histogram": _job_get("256-bin histograms before and after, per channel", {
                "application/json": {"schema": {"type": "object", "properties": {
                    "channels": {"type": "array", "items": {"type": "string"}},
                    "before": {"type": "object"}, "after": {"type": "object"}}}}}),
            "/api/v1/jobs/{id}/histogram.png": _job_get("a plot of the histograms", {
                "image/png": {"schema": {"type": "string", "format": "binary"}}}),
            "/api/v1/cluster": {"get": {"summary": "nodes, leader, certificate expiries (viewer, admin)",
                                        "security": [{"bearerAuth": []}],
                                        "responses": {"200": {"description": "ok"}, **ERRORS}}},
            "/api/v1/tokens/revoke": {"post": {"summary": "revoke a token by its jti (admin)",
                                               "security": [{"bearerAuth": []}],
                                               "requestBody": {"content": {"application/json": {"schema": {
                                                   "type": "object", "required": ["jti"],
                                                   "properties": {"jti": {"type": "string"},
                                                                  "exp": {"type": "number"}}}}}},
                                               "responses": {"200": {"description": "revoked"}, **ERRORS}}},
            "/api/v1/events": {"get": {"summary": "WebSocket: first message {\"type\":\"auth\",\"token\":...}; then "
                                                  "job progress (own jobs) and SecOps events (viewer, admin)",
                                       "responses": {"101": {"description": "switching protocols"}}}},
        },
    }
