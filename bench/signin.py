"""Sign-in, measured (docs/PERFORMANCE.md, "Sign-in"): on a cluster of its own (127.0.30.x), the time of
each step of a person's sign-in — OpenBao's userpass login, its authorize call (what the sign-in page
does), the master's POST /api/v1/oauth/token (code redeemed at OpenBao, ID token verified, histo token
signed by transit) — and of a script's client-credentials sign-in; beside them, `histo token issue`'s
one transit signature as the floor. Nothing here is asserted.

    .venv/bin/python bench/signin.py [--rounds 30] [--out bench/signin.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
NET = "127.0.30"
LIMITS = {"rate_per_address": 10000.0, "burst_per_address": 20000}


def _stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"median_ms": round(statistics.median(s) * 1000, 2),
            "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1000, 2), "n": len(s)}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(rounds: int) -> dict[str, Any]:
    import hvac

    from histo.client.pkce import Attempt
    from histo.edge.tokens import issue_token
    from histo.local import cluster as local_cluster
    from histo.testing.cluster import Cluster
    from histo.testing.signin import authorize, password_of, person_token

    root = Path(tempfile.mkdtemp(prefix="histo-bench-signin-"))
    info = local_cluster.up(root / "c", masters=2, workers=1, cert_ttl="1h", net=NET, extra=LIMITS)
    cl = Cluster(root=(root / "c").resolve(), env=info["env"])
    try:
        cfg = cl.config("master1")
        vault, ca = cfg["vault_url"], cfg["vault_ca"]
        conf = json.loads(cl.request("GET", "/api/v1/signin")[2])
        steps: dict[str, list[float]] = {"userpass_login": [], "authorize": [], "redeem_and_issue": [],
                                         "person_total": [], "client_credentials": [], "transit_sign_only": []}
        ci = json.loads((cl.root / "people" / "ci.client").read_text())
        issuer = hvac.Client(url=vault, verify=ca, token=(cl.root / "issuer-token").read_text().strip())
        formtype = {"Content-Type": "application/x-www-form-urlencoded"}

        def post(body: bytes) -> Callable[[], tuple[int, dict[str, str], bytes]]:
            return lambda: cl.request("POST", "/api/v1/oauth/token", body=body, headers=formtype)

        password = password_of(cl.root, "bob")
        for _ in range(rounds):
            attempt = Attempt(cl.url + "/")
            t_login, tok = _timed(lambda: person_token(vault, ca, "bob", password))
            url = attempt.authorize_url(conf)
            t_auth, (_, answer) = _timed(lambda: authorize(vault, ca, tok, url))  # noqa: B023 (called at once)
            form = urllib.parse.urlencode(attempt.token_form(attempt.code_from(answer))).encode()
            t_redeem, (status, _, _) = _timed(post(form))
            if status != 200:
                raise SystemExit(f"sign-in answered {status}")
            for k, v in (("userpass_login", t_login), ("authorize", t_auth), ("redeem_and_issue", t_redeem),
                         ("person_total", t_login + t_auth + t_redeem)):
                steps[k].append(v)
            body = urllib.parse.urlencode({"grant_type": "client_credentials", **ci, "scope": "uploader"}).encode()
            t_cc, (status, _, _) = _timed(post(body))
            if status != 200:
                raise SystemExit(f"client credentials answered {status}")
            steps["client_credentials"].append(t_cc)
            steps["transit_sign_only"].append(_timed(lambda: issue_token(
                issuer, role="uploader", subject="bench", ttl_seconds=900))[0])
        return {"rounds": rounds, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **{k: _stats(v) for k, v in steps.items()}}
    finally:
        local_cluster.down(root / "c")
        shutil.rmtree(root, ignore_errors=True)  # its passwords and tokens go with it


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", default=str(HERE / "signin.json"))
    a = p.parse_args()
    result = measure(a.rounds)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
