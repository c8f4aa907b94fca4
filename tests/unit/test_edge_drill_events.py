"""POST /api/v1/events: an admin records an attack drill's outcome as one SecOps event of the fixed kind
"drill"; every other role is refused with a JSON 403, a bad body with a JSON 400, and nothing is published
for either. The real handlers and Authenticator, with a local signing key standing in for Vault transit."""
import asyncio
import json
import time
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from histo.edge.events import EventBus
from histo.edge.middleware import json_errors, security_headers
from histo.edge.tokens import TokenVerifier
from histo.master.api import add_routes
from histo.master.auth import Authenticator

from .test_edge_tokens import PUB, token


class FakeMaster:
    def __init__(self) -> None:
        self.cfg = SimpleNamespace(name="master1", auth_failures_before_block=50, auth_block_seconds=30,
                                   rate_per_address=1000, burst_per_address=1000, uploads_per_principal=10,
                                   upload_burst=10, pixels_per_principal=10**8, pixel_window=60.0,
                                   max_concurrent_decodes=2, max_running_jobs=4, uploads_in_flight=4)
        self.events = EventBus()
        self.audited: list[dict] = []
        self.audit = SimpleNamespace(record=lambda **kw: self.audited.append(kw))
        self.auth = Authenticator(self, store=None)  # type: ignore[arg-type]  # no ZooKeeper here: revoke is not called
        self.auth.verifier = TokenVerifier(lambda: {"histo-tokens:1": PUB})

    def emit(self, kind: str, **fields) -> None:
        fields.setdefault("service", self.cfg.name)
        self.events.publish(kind, **fields)

    def audit_decision(self, principal, request, what, allowed, why) -> None:
        self.audited.append({"who": principal.sub, "what": what, "allowed": allowed})


def _tok(role: str) -> str:
    now = time.time()
    return token(now=now, role=role, sub=f"{role}-1", jti=f"{role}-{now}")


def _run(check) -> None:
    async def go():
        master = FakeMaster()
        app = web.Application(middlewares=[security_headers, json_errors])
        add_routes(app, master, "")
        async with TestClient(TestServer(app)) as c:
            await check(c, master)
    asyncio.run(go())


def _drills(master) -> list[dict]:
    return [e for e in master.events.history if e["kind"] == "drill"]


def test_admin_posts_a_drill_event():
    async def check(c, master):
        body = {"drill": "flood", "held": True, "tried": "40 forged tokens", "happened": "429 after 10"}
        r = await c.post("/api/v1/events", json=body, headers={"Authorization": f"Bearer {_tok('admin')}"})
        assert r.status == 201, await r.text()
        assert await r.json() == {"kind": "drill", "drill": "flood", "outcome": "held"}
        ev, = _drills(master)
        assert ev["audience"] == "secops" and ev["severity"] == "info" and ev["outcome"] == "held"
        assert ev["drill"] == "flood" and ev["by"] == "admin-1" and ev["happened"] == "429 after 10"
        r = await c.post("/api/v1/events", json={"drill": "Vault sealed", "held": False},
                         headers={"Authorization": f"Bearer {_tok('admin')}"})
        assert r.status == 201 and _drills(master)[-1]["severity"] == "critical"
        # The kind is fixed: a body cannot choose it, nor the bus's own fields (an unknown field is a 400).
        count = len(_drills(master))
        r = await c.post("/api/v1/events", json={"drill": "x", "held": True, "kind": "leader_changed",
                                                 "audience": "alice", "severity": "info"},
                         headers={"Authorization": f"Bearer {_tok('admin')}"})
        assert r.status == 400 and (await r.json())["error"] == "bad_request"
        assert len(_drills(master)) == count
        last = _drills(master)[-1]
        assert last["kind"] == "drill" and last["audience"] == "secops"
    _run(check)


def test_other_roles_and_anonymous_are_refused_with_json():
    async def check(c, master):
        for role in ("uploader", "viewer"):
            r = await c.post("/api/v1/events", json={"drill": "x", "held": True},
                             headers={"Authorization": f"Bearer {_tok(role)}"})
            assert r.status == 403 and (await r.json())["error"] == "forbidden"
        r = await c.post("/api/v1/events", json={"drill": "x", "held": True})
        assert r.status == 401 and (await r.json())["error"] == "unauthorized"
        assert not _drills(master)
    _run(check)


def test_bad_bodies_are_400_json_and_publish_nothing():
    async def check(c, master):
        auth = {"Authorization": f"Bearer {_tok('admin')}"}
        for raw in (b"not json", b"[]", b"{}", json.dumps({"drill": "x"}).encode(),
                    json.dumps({"drill": "", "held": True}).encode(),
                    json.dumps({"drill": "x", "held": "yes"}).encode(),
                    json.dumps({"drill": 5, "held": True}).encode(),
                    json.dumps({"drill": "x" * 81, "held": True}).encode(),
                    json.dumps({"drill": "x", "held": True, "happened": "y" * 501}).encode(),
                    json.dumps({"drill": "x", "held": True, "tried": ["a"]}).encode(),
                    json.dumps({"drill": "x", "held": True, "pad": "z" * 5000}).encode(),
                    json.dumps({"drill": "x", "held": True, "extra": 1}).encode(),
                    b'{"drill": "x", "held": true, "tried": NaN}', b'{"drill": "\\ud800", "held": true}',
                    b"\xff\xfe"):
            r = await c.post("/api/v1/events", data=raw, headers={**auth, "Content-Type": "application/json"})
            assert r.status == 400, (raw[:40], r.status)
            assert (await r.json())["error"] == "bad_request"
        assert not _drills(master)
    _run(check)
