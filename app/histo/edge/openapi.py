"""The OpenAPI 3.1 description of the public API (served at /api/v1/openapi.json).

The request schemas the handlers validate with (edge/validation.py) are defined here, once, and
published as they are: REVOKE_REQUEST, DRILL_EVENT, WAIT. The WebSocket (GET /api/v1/events) is not
an HTTP operation OpenAPI can describe: it is named under `x-websockets` (handshake, first message,
close codes, messages), as the UI page is under `x-ui`."""
from __future__ import annotations

import copy
from typing import Any

from ..compute.equalize import DEFAULT_MODE, MODES

REF = "#/components/schemas/"
# -- request schemas: published below and validated by the handlers (master/api.py) ------------------
JTI_PATTERN = "^[A-Za-z0-9_-]{1,64}$"  # zk/revocations.py stores a token id as a znode name
REVOKE_REQUEST: dict[str, Any] = {
    "type": "object", "required": ["jti"], "additionalProperties": False, "properties": {
        "jti": {"type": "string", "pattern": JTI_PATTERN, "description": "the token's id (its jti claim)"},
        "exp": {"type": "number", "minimum": 0, "maximum": 1e10,
                "description": "the token's expiry (Unix time); default: an hour from now"}}}
DRILL_FIELDS = {"drill": 80, "tried": 300, "happened": 500}  # the text fields and their longest length
DRILL_EVENT: dict[str, Any] = {
    "type": "object", "required": ["drill", "held"], "additionalProperties": False, "properties": {
        "drill": {"type": "string", "minLength": 1, "maxLength": DRILL_FIELDS["drill"], "examples": ["flood"]},
        "held": {"type": "boolean", "description": "whether the control held"},
        "tried": {"type": "string", "maxLength": DRILL_FIELDS["tried"]},
        "happened": {"type": "string", "maxLength": DRILL_FIELDS["happened"]}}}
# One attributed refusal of the SecOps record (secops/sources.py classify), as the collector's relay pushes it
# to every master (POST /internal/v1/secops/events, the secops identity only) and GET /api/v1/secops/events
# returns it. Every field is bounded and typed; nothing else is accepted (no free-form object that could
# carry a secret), and the text fields are redacted again on arrival.
SECOPS_LAYERS = ("vault", "zookeeper", "firewall", "ssh", "mtls", "edge", "secops", "service")
SECOPS_EVENT: dict[str, Any] = {
    "type": "object", "required": ["record_seq", "ts", "layer", "kind", "severity", "host"],
    "additionalProperties": False, "properties": {
        "record_seq": {"type": "integer", "minimum": 1, "maximum": 9007199254740991,
                       "description": "the entry's sequence number in the collector's hash-chained record"},
        "ts": {"type": "number", "minimum": 0, "maximum": 1e10, "description": "when the collector stored it"},
        "layer": {"type": "string", "enum": list(SECOPS_LAYERS)},
        "kind": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$", "examples": ["vault_denied"]},
        "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
        "host": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
                 "description": "the refused identity: an inventory host, or \"outside\""},
        "spiffe": {"type": ["string", "null"], "maxLength": 200,
                   "pattern": "^spiffe://[a-z0-9.-]{1,100}/[a-z]{1,20}/[a-z0-9-]{1,63}$"},
        "address": {"type": ["string", "null"], "pattern": "^[0-9A-Fa-f.:]{1,45}$",
                    "description": "the address the refused request came from"},
        "where": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$",
                  "description": "the machine that refused it"},
        "what": {"type": ["string", "null"], "maxLength": 300,
                 "description": "what was refused (a Vault path, a port, a user, a znode)"},
        "why": {"type": ["string", "null"], "maxLength": 300},
        # an incident's own entries (secops/detect.py, respond.py: kind incident_opened, _escalated,
        # _alerted, _contained): which incident and the rule that opened it
        "incident": {"type": ["string", "null"], "pattern": "^[0-9a-f]{16}$"},
        "rule": {"type": ["string", "null"], "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"}}}
SECOPS_MAX_BATCH = 100  # events per push
# bytes of one push: 100 events of ordinary size fit; 100 with every text field at its bound do not (a
# 300-character `what` is up to 1,800 bytes of JSON), so the relay also cuts its batches by size
SECOPS_MAX_BODY = 64 * 1024
WAIT: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 60,
                        "description": "seconds to wait for the job to end (long poll)"}
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
JOB_ID = {"name": "id", "in": "path", "required": True, "description": "a job id as returned by POST /api/v1/jobs",
          "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"}}
_HEADERS = {
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def _err(desc: str, *headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": desc, "content": {"application/json": {"schema": _ref("Error")}}}
    if headers:
        out["headers"] = {h: _HEADERS[h] for h in headers}
    return out


def _json(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _binary(*types: str) -> dict[str, Any]:
    return {t: {"schema": {"type": "string", "contentMediaType": t}} for t in types}


AUTH_ERRORS = {
    "401": _err("no token, or a bad, expired or revoked one", "WWW-Authenticate"),
    "403": _err("the token's role may not do this"),
    "429": _err("rate limited, or this address is throttled after failed authentications", "Retry-After"),
    "503": _err("not ready, no leader or no workers, or tokens cannot be verified right now", "Retry-After"),
}
JOB_ERRORS = {**AUTH_ERRORS, "404": _err("unknown job, or another user's job (existence is not revealed)"),
              "410": _err("the caller's job was deleted (by its owner or an admin; others get 404) or "
                                  "removed when its retention ended")}


def _schemas() -> dict[str, Any]:
    hist = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 256, "maxItems": 256}
    node = {"type": "object", "required": ["name", "endpoint", "spiffe_id", "cert_not_after"], "properties": {
        "name": {"type": "string"}, "endpoint": {"type": ["string", "null"]},
        "spiffe_id": {"type": ["string", "null"], "examples": ["spiffe://histo.internal/worker/worker1"]},
        "cert_not_after": {"type": ["string", "null"], "format": "date-time"}}}
    return {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string", "description": "machine-readable code", "examples": ["unauthorized"]},
            "message": {"type": "string", "description": "human-readable text"}}},
        "JobAccepted": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"}, "state": {"type": "string", "const": "queued"}}},
        "Job": {"type": "object", "required": ["id", "owner", "state", "mode", "progress"], "properties": {
            "id": {"type": "string"}, "owner": {"type": "string", "description": "the uploader's token subject"},
            "state": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
            "mode": {"type": "string", "enum": list(MODES)},
            "format": {"type": ["string", "null"], "enum": ["JPEG", "PNG", None]},
            "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "tiles": {"type": ["integer", "null"], "description": "strips the image was split into"},
            "reason": {"type": ["string", "null"], "description": "why the job failed"},
            "timings": {"type": "object", "additionalProperties": {"type": "number"},
                        "description": "phase -> seconds"},
            "created": {"type": "number", "description": "Unix time"},
            "finished": {"type": ["number", "null"], "description": "Unix time"}}},
        "JobList": {"type": "object", "required": ["jobs"], "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next page"}}},
        "Histogram": {"type": "object", "required": ["channels", "before", "after"], "properties": {
            "id": {"type": "string"},
            "channels": {"type": "array", "items": {"type": "string"}, "examples": [["Y"], ["R", "G", "B"]]},
            "before": {"type": "object", "additionalProperties": hist},
            "after": {"type": "object", "additionalProperties": hist}}},
        "JobDeleted": {"type": "object", "required": ["id", "state", "cancelled"], "properties": {
            "id": {"type": "string"}, "state": {"const": "deleted"},
            "cancelled": {"type": "boolean", "description": "the job was still queued or running and was stopped"}}},
        "ReceiptClaims": {
            "type": "object", "description": "the payload of a receipt (the JWS's second part, base64url JSON)",
            "required": ["iss", "job", "sub", "mode", "upload_sha256", "result_sha256", "workers", "master",
                         "created", "finished", "iat", "key_version"], "properties": {
                "iss": {"const": "histo"}, "job": {"type": "string"}, "sub": {"type": "string", "description": "owner"},
                "mode": {"type": "string", "enum": ["gray", "luma", "rgb"]},
                "format": {"type": ["string", "null"]}, "width": {"type": ["integer", "null"]},
                "height": {"type": ["integer", "null"]},
                "upload_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                  "description": "SHA-256 of the uploaded bytes"},
                "result_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                  "description": "SHA-256 of the bytes GET .../result answers"},
                "workers": {"type": "array", "items": {"type": "string"},
                            "examples": [["spiffe://histo.internal/worker/worker1"]],
                            "description": "SPIFFE ids of the workers whose strip results were accepted"},
                "master": {"type": "string", "examples": ["spiffe://histo.internal/master/master1"]},
                "created": {"type": "number"}, "finished": {"type": "number"},
                "iat": {"type": "integer", "description": "when it was signed (Unix time)"},
                "key_version": {"type": "integer", "description": "version of the transit key histo-receipts"}}},
        "Node": node,
        "Master": {"allOf": [node, {"type": "object", "required": ["leader"],
                                    "properties": {"leader": {"type": "boolean"}}}]},
        "Cluster": {"type": "object", "required": ["leader", "masters", "workers"], "properties": {
            "leader": {"type": ["string", "null"]}, "masters": {"type": "array", "items": _ref("Master")},
            "workers": {"type": "array", "items": _ref("Node")},
            "self": {"type": "object", "description": "the answering master and its certificate"},
            "incidents": {"type": "array", "items": _ref("Incident"),
                          "description": "quarantined hosts and recent releases (SecOps containment)"}}},
        "Incident": {"type": "object", "required": ["host", "state"], "properties": {
            "host": {"type": "string"}, "state": {"type": "string",
                                                  "enum": ["contained", "partly contained", "released"]},
            "incident": {"type": "string"}, "rule": {"type": "string"}, "since": {"type": "number"},
            "released": {"type": "number"}, "release": {"type": "string", "description": "what gives it back"},
            "actions": {"type": "array", "items": {"type": "object"}},
            "evidence": {"type": "array", "items": {"type": "object"}}}},
        "Health": {"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "not_ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "object"}}}},
        "Event": {"type": "object", "required": ["ts", "kind", "severity", "audience"], "properties": {
            "ts": {"type": "number", "description": "Unix time"}, "seq": {"type": "integer"},
            "kind": {"type": "string", "examples": ["auth_failure", "mtls_rejected", "cert_rotated",
                                                    "leader_changed", "job_progress"]},
            "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
            "audience": {"type": "string", "description": "\"secops\", or the owner of the job it is about"}},
            "additionalProperties": True},
        "DrillEvent": DRILL_EVENT,
        "SecopsEvent": {**SECOPS_EVENT, "additionalProperties": True, "required": [
            *SECOPS_EVENT["required"], "collector", "received"], "properties": {
            **SECOPS_EVENT["properties"],
            "collector": {"type": "string", "description": "the collector host whose relay pushed it"},
            "record": {"type": "string", "description": "the record it is in (the first 16 hex digits of the "
                                                        "hash of the record's first entry)"},
            "received": {"type": "number", "description": "when this master received it (Unix time)"}}},
        "SecopsEvents": {"type": "object", "required": ["events", "next_since", "head"], "properties": {
            "events": {"type": "array", "items": _ref("SecopsEvent")},
            "next_since": {"type": "integer", "description": "pass as `since` for the next page"},
            "head": {"type": "integer", "description": "the highest record_seq this master holds"},
            "more": {"type": "boolean", "description": "more events match after this page"}}},
        "RevokeRequest": REVOKE_REQUEST,
        "WsAuth": {"type": "object", "required": ["type", "token"], "description": "client -> server, first message",
                   "properties": {"type": {"const": "auth"}, "token": {"type": "string"}}},
        "WsReady": {"type": "object", "required": ["type", "role"], "description": "server -> client",
                    "properties": {"type": {"const": "ready"}, "role": {"type": "string"}, "sub": {"type": "string"}}},
        "WsEvent": {"type": "object", "required": ["type", "event"], "description": "server -> client",
                    "properties": {"type": {"const": "event"}, "event": _ref("Event")}},
    }


def _job_get(summary: str, op_id: str, content: dict[str, Any], vault_503: bool = False) -> dict[str, Any]:
    errors = dict(JOB_ERRORS)
    if vault_503:
        errors["503"] = _err("not ready, or Vault cannot sign the receipt right now", "Retry-After")
    return {"get": {"summary": summary, "operationId": op_id, "tags": ["jobs"], "parameters": [JOB_ID],
                    "security": BEARER, "responses": {
                        "200": {"description": "ok", "content": content},
                        "409": _err("the job has not finished (or failed)"), **errors}}}


def _signin_paths() -> dict[str, Any]:
    """Sign-in (master/signin.py) and the receipt keys (master/receiptkeys.py): no bearer token."""
    token = {"type": "object", "required": ["access_token", "token_type", "expires_in", "sub", "role"],
             "properties": {"access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                            "expires_in": {"type": "integer"}, "sub": {"type": "string"},
                            "role": {"type": "string", "enum": ["uploader", "viewer", "admin"]}}}
    text = {"type": "string", "minLength": 1, "maxLength": 2048}
    form = {"oneOf": [
        {"type": "object", "title": "person (authorization code + PKCE)",
         "required": ["grant_type", "code", "code_verifier", "redirect_uri", "nonce"], "properties": {
             "grant_type": {"const": "authorization_code"}, "code": text, "redirect_uri": text, "nonce": text,
             "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$"}}},
        {"type": "object", "title": "script (client credentials; or client_id:client_secret as HTTP Basic)",
         "required": ["grant_type", "client_id", "client_secret", "scope"], "properties": {
             "grant_type": {"const": "client_credentials"}, "client_id": text, "client_secret": text,
             "scope": {"type": "string", "enum": ["uploader", "viewer", "admin"]}}}]}
    return {
        "/api/v1/signin": {"get": {
            "summary": "what a client needs to start a sign-in at OpenBao (authorize URL, client id, scope)",
            "operationId": "getSignin", "tags": ["security"], "security": [],
            "responses": {"200": _json("ok", {"type": "object"}),
                          "503": _err("sign-in unavailable (Vault away)", "Retry-After")}}},
        "/api/v1/oauth/token": {"post": {
            "summary": "a histo API token for a person (authorization code + PKCE, redeemed at OpenBao) or a "
                       "script (client credentials; scope = the role asked for)",
            "operationId": "oauthToken", "tags": ["security"], "security": [],
            "requestBody": {"required": True,
                            "content": {"application/x-www-form-urlencoded": {"schema": form}}},
            "responses": {"200": _json("signed in", token),
                          "400": _err("bad form, unknown grant, or the provider refused the code or verifier"),
                          "401": _err("bad client credentials, or the ID token does not verify"),
                          "403": _err("no histo group (no_histo_role), or a scope the client lacks"),
                          "429": _err("rate limited or throttled", "Retry-After"),
                          "503": _err("sign-in unavailable (Vault away)", "Retry-After")}}},
        "/api/v1/signout": {"post": {
            "summary": "sign out: the caller's own token is revoked on every master (any role)",
            "operationId": "signOut", "tags": ["security"], "security": BEARER,
            "responses": {"200": _json("revoked", {"type": "object", "required": ["revoked"],
                                                   "properties": {"revoked": {"type": "string"}}}),
                          **AUTH_ERRORS}}},
        "/api/v1/receipts/keys": {"get": {
            "summary": "the public keys of every version of the receipt key (kid -> PEM), to verify offline",
            "operationId": "getReceiptKeys", "tags": ["security"], "security": [],
            "responses": {"200": _json("ok", {"type": "object", "required": ["key", "keys"], "properties": {
                "key": {"const": "histo-receipts"},
                "keys": {"type": "object", "additionalProperties": {"type": "string"}}}}),
                "429": _err("rate limited or throttled", "Retry-After"),
                "503": _err("Vault away and no key cached", "Retry-After")}}},
    }


def _paths() -> dict[str, Any]:
    health = {"content": {"application/json": {"schema": _ref("Health")}}}
    return {
        "/healthz": {"get": {"summary": "liveness", "operationId": "healthz", "tags": ["health"], "security": [],
                             "responses": {"200": {"description": "alive", **health}}}},
        "/readyz": {"get": {"summary": "readiness: ZooKeeper session, valid certificate, leader known",
                            "operationId": "readyz", "tags": ["health"], "security": [], "responses": {
                                "200": {"description": "ready (status ok or degraded)", **health},
                                "503": {"description": "not ready", **health}}}},
        "/api/v1/openapi.json": {"get": {"summary": "this document", "operationId": "openapi", "tags": ["meta"],
                                         "security": [], "responses": {"200": _json("OpenAPI 3.1",
                                                                                    {"type": "object"})}}},
        "/api/v1/jobs": {
            "post": {"summary": "upload an image to equalize (uploader, admin)", "operationId": "createJob",
                     "tags": ["jobs"], "security": BEARER,
                     "requestBody": {"required": True, "content": {"multipart/form-data": {
                         "schema": {"type": "object", "required": ["image"], "properties": {
                             "image": {"type": "string", "contentMediaType": "application/octet-stream",
                                       "minLength": 1, "description": "a JPEG or PNG"},
                             "mode": {"type": "string", "enum": list(MODES), "default": DEFAULT_MODE,
                                      "description": "gray: one channel; luma: equalize brightness, keep "
                                                     "colours; rgb: each channel on its own"}}},
                         "encoding": {"image": {"contentType": "image/jpeg, image/png"}}}}},
                     "responses": {"202": _json("accepted; follow GET /api/v1/jobs/{id}", _ref("JobAccepted")),
                                   "400": _err("not a decodable image, or a bad form"),
                                   "413": _err("too large (bytes or pixels)"),
                                   "415": _err("not a JPEG or PNG"), **AUTH_ERRORS,
                                   "429": _err("rate limited or throttled; or admission by cost: the principal's "
                                               "pixel budget is spent (over_budget), too many of its jobs run "
                                               "(too_many_jobs) or uploads are in progress (too_many_uploads)",
                                               "Retry-After"),
                                   "503": _err("not ready, no leader or no workers, tokens cannot be verified, or "
                                               "the cluster is busy (busy: every decoder or job slot taken)",
                                               "Retry-After")}},
            "get": {"summary": "the caller's jobs, newest first (admin: all), a page at a time",
                    "operationId": "listJobs",
                    "tags": ["jobs"], "security": BEARER,
                    "parameters": [
                        {"name": "limit", "in": "query", "required": False, "description": "jobs per page",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
                        {"name": "cursor", "in": "query", "required": False,
                         "description": "the next_cursor of the previous page",
                         "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}}],
                    "responses": {"200": _json("ok", _ref("JobList")),
                                  "400": _err("limit or cursor malformed"), **AUTH_ERRORS}}},
        "/api/v1/jobs/{id}": {
            "get": {
                "summary": "state, progress, timings (owner, admin); ?wait=S long-polls until the job ends",
                "operationId": "getJob", "tags": ["jobs"], "security": BEARER,
                "parameters": [JOB_ID, {"name": "wait", "in": "query", "required": False, "schema": WAIT}],
                "responses": {"200": _json("ok", _ref("Job")), "400": _err("wait is not a number from 0 to 60"),
                              **JOB_ERRORS}},
            "delete": {
                "summary": "delete the job and its stored data everywhere (owner, admin)",
                "description": "Removes the job's record, task state, result, histograms and receipt from every "
                               "master; a job still queued or running is cancelled first. Afterwards the owner "
                               "(and admins) get 410 for the job, everyone else 404. Deleting again answers 410.",
                "operationId": "deleteJob", "tags": ["jobs"], "security": BEARER, "parameters": [JOB_ID],
                "responses": {"200": _json("deleted", _ref("JobDeleted")), **JOB_ERRORS}}},
        "/api/v1/jobs/{id}/result": _job_get("the equalized image (same format as uploaded)", "getResult",
                                             _binary("image/jpeg", "image/png")),
        "/api/v1/jobs/{id}/histogram": _job_get("256-bin histograms before and after, per channel",
                                                "getHistogram", {"application/json": {"schema": _ref("Histogram")}}),
        "/api/v1/jobs/{id}/histogram.png": _job_get("a plot of the histograms, before / after", "getHistogramPlot",
                                                    _binary("image/png")),
        "/api/v1/jobs/{id}/receipt": _job_get(
            "a receipt for the finished job: compact JWS (ES256) signed by Vault transit key histo-receipts",
            "getReceipt", {"application/jose": {"schema": {
                "type": "string", "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
                "description": "header {alg: ES256, typ: histo-receipt+jwt, kid: histo-receipts:<version>}; "
                               "payload ReceiptClaims. Verify offline: histo receipt verify --receipt R "
                               "--image RESULT [--upload UPLOAD]; public keys: Vault transit/keys/histo-receipts "
                               "(policy histo-receipt-verifier)",
                "contentSchema": _ref("ReceiptClaims")}}},
            vault_503=True),
        "/api/v1/cluster": {"get": {"summary": "nodes, leader, certificate expiries (viewer, admin)",
                                    "operationId": "getCluster", "tags": ["cluster"], "security": BEARER,
                                    "responses": {"200": _json("ok", _ref("Cluster")), **AUTH_ERRORS}}},
        **_signin_paths(),
        "/api/v1/secops/events": {"get": {
            "summary": "recent refusals of the SecOps record (the collector's attributed events, pushed to every "
                       "master), oldest first, from this master's bounded buffer (viewer, admin)",
            "operationId": "getSecopsEvents", "tags": ["events", "security"], "security": BEARER,
            "parameters": [
                {"name": "since", "in": "query", "description": "only events of a higher record_seq (a page's "
                 "next_since)", "schema": {"type": "integer", "minimum": 0, "maximum": 9007199254740991}},
                {"name": "layer", "in": "query", "schema": {"type": "string", "enum": list(SECOPS_LAYERS)}},
                {"name": "host", "in": "query", "description": "the refused identity's host",
                 "schema": SECOPS_EVENT["properties"]["host"]},
                {"name": "severity", "in": "query", "description": "this severity or higher",
                 "schema": {"type": "string", "enum": ["info", "warning", "critical"]}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                            "default": 100}}],
            "responses": {"200": _json("ok", _ref("SecopsEvents")),
                          "400": _err("a bad query parameter"), **AUTH_ERRORS}}},
        "/api/v1/tokens/revoke": {"post": {
            "summary": "revoke a token by its jti, on every master (admin)", "operationId": "revokeToken",
            "tags": ["security"], "security": BEARER,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RevokeRequest")}}},
            "responses": {"200": _json("revoked", {"type": "object", "required": ["revoked"],
                                                   "properties": {"revoked": {"type": "string"}}}),
                          "400": _err("bad body: not JSON, not a RevokeRequest, or larger than 4096 bytes"),
                          **AUTH_ERRORS}}},
        "/api/v1/events": {
            "post": {"summary": "record an attack drill's outcome as a SecOps event of kind \"drill\" (admin)",
                     "operationId": "postDrillEvent", "tags": ["events", "security"], "security": BEARER,
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("DrillEvent")}}},
                     "responses": {"201": _json("recorded and published to the SecOps dashboard", {
                         "type": "object", "required": ["kind", "drill", "outcome"], "properties": {
                             "kind": {"const": "drill"}, "drill": {"type": "string"},
                             "outcome": {"type": "string", "enum": ["held", "failed"]}}}),
                         "400": _err("bad body (not JSON, no drill or held, a field too long)"), **AUTH_ERRORS}}},
    }


def _websockets() -> dict[str, Any]:
    """What OpenAPI 3.1 cannot say as an operation: the WebSocket, its handshake and its messages."""
    return {"/api/v1/events": {
        "summary": "WebSocket: job progress (own jobs) and SecOps events (viewer, admin)",
        "description": "GET with a WebSocket handshake (RFC 6455). Browsers cannot set headers on a WebSocket, so "
                       "the FIRST message must be WsAuth {\"type\":\"auth\",\"token\":...}. The server answers "
                       "WsReady, or closes with code 4401 (no, bad, expired or revoked token; also when the token "
                       "expires or is revoked later) or 1013 (tokens cannot be verified right now). Then WsEvent "
                       "messages follow, starting with recent history. Before the handshake: 429 (rate limited or "
                       "throttled address, Retry-After) or 400 (not a WebSocket handshake), with the Error body.",
        "handshake": {"101": "switching protocols", "400": _ref("Error"), "429": _ref("Error")},
        "client": [_ref("WsAuth")], "server": [_ref("WsReady"), _ref("WsEvent")],
        "close": {"4401": "authentication required, token expired or revoked",
                  "1013": "tokens cannot be verified right now; try again"}}}


_SPEC: dict[str, Any] | None = None


def spec() -> dict[str, Any]:
    """The document (a fresh copy: callers may mutate it)."""
    global _SPEC
    if _SPEC is None:
        _SPEC = {
            "openapi": "3.1.0",
            "info": {"title": "histo", "version": "1.0.0",
                     "summary": "Secured, distributed histogram equalization",
                     "description": "Upload a JPEG or PNG; the leader master splits it into strips, workers "
                                    "histogram and equalize them over mutual TLS, and the result comes back "
                                    "here. Tokens are short-lived ES256 JWTs signed by Vault transit "
                                    "(`histo token issue`). Every error is JSON {\"error\", \"message\"}."},
            "servers": [{"url": "/"}],
            # GET / (the web UI) and /static/* are pages, not API operations: named here, not in paths
            "x-ui": {"page": "/", "assets": "/static/", "description": "the web UI and SecOps dashboard"},
            "security": BEARER,
            "tags": [{"name": n} for n in ("jobs", "cluster", "events", "security", "health", "meta")],
            "components": {
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                                   "description": "role claim: uploader, viewer or admin"}},
                "schemas": _schemas(),
            },
            "paths": _paths(),
            "x-websockets": _websockets(),
        }
    return copy.deepcopy(_SPEC)
