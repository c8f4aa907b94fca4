"""What the deployed drills run inside a cluster machine, as root there: the service's own configuration,
files and clients, and one task per step a drill takes from inside.

attack/target.py sends this file on stdin to the machine's own /opt/histo/bin/python (the histo wheel
the role installed) after a JSON line {"task", "payload"}, so no secret is ever on a command line. The
file runs as a plain script that reads that line from its stdin and prints the task's answer (JSON)
after ANSWER on its last line; whatever the task learns (keys, tokens, secret_ids) goes back only in
that answer, never to a file that outlives it. Importing it has no effect (the controller reuses tcp())."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histo.vault.client import ServiceVault

ANSWER = "@@R@@"
READY = "@@READY@@"  # a task that waits for the controller prints this line first (revocable)
CFG: dict[str, Any] = {}  # /etc/histo/<role>.json, loaded by main()
RESULT_HEADERS = {"X-Histo-Job": "0" * 24, "X-Histo-Task": "0", "X-Histo-Attempt": "0" * 16,
                  "X-Histo-Phase": "equalize", "X-Histo-Image-Mode": "L", "X-Histo-Width": "1", "X-Histo-Rows": "1",
                  "X-Histo-Reply-To": "https://127.0.0.1:1"}


# -- the service's own files and clients ---------------------------------------------------------------
def tls_dir() -> Path:
    return Path(CFG["state_dir"]) / "tls"


def creds_dir() -> Path:
    return Path(CFG["creds_dir"])


def service_vault(creds: Path | str | None = None, host: str | None = None, role: str | None = None) -> ServiceVault:
    from histo.vault.client import ServiceVault
    return ServiceVault(CFG["vault_url"], CFG["vault_ca"], host=host or CFG["name"], role=role or CFG["role"],
                        creds_dir=Path(creds or creds_dir()), source_address=CFG["address"],
                        trust_domain=CFG["trust_domain"])


def drop(v: ServiceVault) -> None:
    try:
        v.client.auth.token.revoke_self()
    except Exception:
        pass


def login(v: ServiceVault) -> str:
    """"logged in", or why Vault refused the login."""
    from histo.vault.client import VaultAuthError
    try:
        v.login()
        return "logged in"
    except VaultAuthError as exc:
        return str(exc)[:160]


@contextlib.contextmanager
def private_files(files: dict[str, str]) -> Iterator[Path]:
    """A private temporary folder holding `files` (name: text); removed with all it holds on exit."""
    d = Path(tempfile.mkdtemp(prefix="histo-drill-"))
    try:
        for name, text in files.items():
            (d / name).write_text(text)
        yield d
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def tls_files(cert: str, key: str, ca: str) -> dict[str, str]:
    return {"cert.pem": cert, "key.pem": key, "ca.pem": ca}


def https(addr: str, port: int, path: str, method: str = "GET", body: bytes = b"",
          headers: dict[str, str] | None = None, tls: Path | str | None = None,
          timeout: float = 6) -> tuple[int | None, str]:
    """(status, error code) of one HTTPS call with the client certificate in `tls`; or (None, why)."""
    tls = Path(tls or tls_dir())
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
    conn = http.client.HTTPSConnection(addr, port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            doc = json.loads(raw)
            why = (doc.get("error") or "") + (": " + doc["message"] if doc.get("message") else "")
        except ValueError:
            why = ""
        return resp.status, why[:160]
    except ssl.SSLError as exc:
        return None, "TLS refused: " + (exc.reason or type(exc).__name__)
    except (socket.timeout, TimeoutError):
        return None, "timeout (dropped)"
    except ConnectionRefusedError:
        return None, "connection refused"
    except OSError as exc:
        return None, "closed by peer: " + type(exc).__name__
    finally:
        conn.close()


def tcp(addr: str, port: int, timeout: float = 2.0) -> str:
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as exc:
        return "error:" + type(exc).__name__
    finally:
        s.close()


def zk_session(user: str | None, password: str | None, tls: str | Path | None = None) -> Any:
    """A session with the service's certificate and a digest credential (none if user is None)."""
    from kazoo.client import KazooClient
    tls = Path(tls or tls_dir())
    c = KazooClient(hosts=CFG["zk_hosts"], use_ssl=True, verify_certs=True, check_hostname=True,
                    ca=str(tls / "ca.pem"), certfile=str(tls / "cert.pem"), keyfile=str(tls / "key.pem"),
                    auth_data=[("digest", f"{user}:{password}")] if user else None, timeout=6,
                    connection_retry={"max_tries": 3, "delay": 0.3})
    c.start(timeout=20)
    return c


# -- eavesdrop: secrets that must never cross the bridge in the clear ---------------------------------
def eavesdrop_worker(p: dict[str, Any]) -> dict[str, Any]:
    v = service_vault()
    v.login()  # role_id + secret_id cross the wire (inside TLS, we hope)
    user, password = v.zk_credentials()
    zk = zk_session(user, password)  # a fresh ZooKeeper session: the digest credentials cross the wire
    zk.get_children("/histo/jobs")
    zk.stop()
    zk.close()
    r = {"needles": {"worker secret_id": (creds_dir() / "secret_id").read_text().strip(),
                     "worker role_id": (creds_dir() / "role_id").read_text().strip(),
                     "worker Vault token": v.client.token, "worker ZooKeeper password": password}}
    drop(v)
    return r


def eavesdrop_master(p: dict[str, Any]) -> dict[str, Any]:
    v = service_vault()
    v.login()
    r = {"needles": {"master ZooKeeper password": v.zk_credentials()[1], "master Vault token": v.client.token}}
    drop(v)
    return r


# -- stolen certificate ------------------------------------------------------------------------------
def read_tls(p: dict[str, Any]) -> dict[str, Any]:
    return {"tls": {n: (tls_dir() / n).read_text() for n in ("cert.pem", "key.pem", "ca.pem")}}


def use_tls(p: dict[str, Any]) -> dict[str, Any]:
    with private_files(tls_files(p["tls"]["cert.pem"], p["tls"]["key.pem"], p["tls"]["ca.pem"])) as d:
        return {"calls": [list(https(addr, port, path, "POST", b"[]", RESULT_HEADERS, tls=d))
                          for addr, port, path in p["targets"]]}


def own_tls(p: dict[str, Any]) -> dict[str, Any]:
    return {"calls": [list(https(addr, port, path, "POST", b"[]", RESULT_HEADERS))
                      for addr, port, path in p["targets"]]}


# -- a compromised worker -------------------------------------------------------------------------------
def compromised(p: dict[str, Any]) -> dict[str, Any]:
    import hvac
    from kazoo.exceptions import NoAuthError
    r: dict[str, Any] = {}
    v = service_vault()
    v.login()
    vault_refused: list[str] = []
    vault_allowed: list[str] = []

    def attempt(what: str, fn: Callable[[], object], bucket_ok: list[str], bucket_no: list[str]) -> None:
        try:
            fn()
            bucket_ok.append(what)
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest, hvac.exceptions.Unauthorized):
            bucket_no.append(what)

    def kv(path: str) -> Any:
        return v.client.secrets.kv.v2.read_secret_version(path, mount_point="secret", raise_on_deleted_version=True)
    for what, fn in (("read the masters' ZooKeeper credentials", lambda: kv("histo/zk/master")),
                     ("read the ZooKeeper super digest", lambda: kv("histo/zk/super")),
                     ("issue a master certificate", lambda: v.client.write_data(
                         "pki_int/issue/host-" + p["master"], data={"common_name": p["master"] + ".histo.internal",
                                                                    "ttl": "60s"})),
                     ("issue another worker's certificate", lambda: v.client.write_data(
                         "pki_int/issue/host-" + p["other_worker"],
                         data={"common_name": p["other_worker"] + ".histo.internal", "ttl": "60s"})),
                     ("sign an API token", lambda: v.client.secrets.transit.sign_data(
                         "histo-tokens", "aGk=", mount_point="transit")),
                     ("read Vault's policies", lambda: v.client.sys.read_policy("histo-" + p["master"]))):
        attempt(what, fn, vault_allowed, vault_refused)
    legit: list[str] = []
    try:
        v.issue_cert("60s")
        legit.append("issue its own certificate")
    except Exception:
        pass
    user, password = v.zk_credentials()
    legit.append("read its own ZooKeeper credentials")
    zk = zk_session(user, password)
    zk_refused: list[str] = []
    zk_allowed: list[str] = []
    try:
        jobs = zk.get_children("/histo/jobs")
        legit.append("list jobs in ZooKeeper")
        target = p["job"] if p["job"] in jobs else None
        w2, _ = zk.get("/histo/workers/" + p["other_worker"] + "/member")

        def try_zk(what: str, fn: Callable[[], object], undo: Callable[[], object] | None = None) -> None:
            try:
                fn()
                zk_allowed.append(what)
                if undo:
                    undo()
            except NoAuthError:
                zk_refused.append(what)
        try_zk("delete a job", lambda: zk.delete("/histo/jobs/" + target, recursive=True) if target
               else zk.delete("/histo/jobs"))
        try_zk("join the leader election",
               lambda: r.__setitem__("created", zk.create("/histo/election/x-", b"w", ephemeral=True, sequence=True)),
               lambda: zk.delete(r.pop("created")))
        try_zk("rewrite another worker's membership",
               lambda: zk.set("/histo/workers/" + p["other_worker"] + "/member", w2))
        try_zk("squat another worker's membership slot",
               lambda: zk.create("/histo/workers/" + p["other_worker"] + "/ghost", w2, ephemeral=True))
        try_zk("register a ghost member", lambda: zk.create("/histo/workers/ghost1", w2, ephemeral=True),
               lambda: zk.delete("/histo/workers/ghost1"))
        own = "/histo/workers/" + p["worker"] + "/member"
        mine, _ = zk.get(own)
        zk.set(own, mine)
        legit.append("rewrite its own membership node")
        try_zk("add to the token revocation list",
               lambda: zk.create("/histo/revoked/drill-" + os.urandom(4).hex(), b""))
        zk_system_nodes(zk, "with the workers' digest: ", zk_allowed, zk_refused)
    finally:
        zk.stop()
        zk.close()
    anon = zk_session(None, None)  # its certificate alone, no digest at all
    try:
        zk_system_nodes(anon, "with no digest: ", zk_allowed, zk_refused)
    finally:
        anon.stop()
        anon.close()
    drop(v)
    r.update(vault_refused=vault_refused, vault_allowed=vault_allowed, zk_refused=zk_refused, zk_allowed=zk_allowed,
             legit=legit, reach={f"{a}:{port}": tcp(a, port) for a, port in p["reach"]})
    return r


def zk_system_nodes(zk: Any, how: str, allowed: list[str], refused: list[str]) -> None:
    """ZooKeeper's own nodes (world:anyone:cdrwa out of the box): a node under /zookeeper, a quota
    node (a zookeeper_limits child is reported to crash 3.8.0), their ACLs opened to the world."""
    from kazoo.exceptions import NoAuthError, NoNodeError
    from kazoo.security import OPEN_ACL_UNSAFE
    tag = "drill-" + os.urandom(4).hex()
    attempts: tuple[tuple[str, Callable[[], Any], Callable[[], Any] | None], ...] = (
            ("create under /zookeeper", lambda: zk.create("/zookeeper/" + tag, b""),
             lambda: zk.delete("/zookeeper/" + tag)),
            ("create a zookeeper_limits quota node",
             lambda: zk.create("/zookeeper/quota/" + tag + "/zookeeper_limits", b"count=1,bytes=1", makepath=True),
             lambda: zk.delete("/zookeeper/quota/" + tag, recursive=True)),
            ("open /zookeeper/quota to the world", lambda: zk.set_acls("/zookeeper/quota", OPEN_ACL_UNSAFE), None))
    for what, fn, undo in attempts:
        try:
            fn()
            allowed.append(how + what)
            if undo:
                try:
                    undo()
                except (NoAuthError, NoNodeError):
                    pass
        except NoAuthError:
            refused.append(how + what)


# -- forged and replayed task results ---------------------------------------------------------------------
def replay(p: dict[str, Any]) -> dict[str, Any]:
    v = service_vault()
    v.login()
    user, password = v.zk_credentials()
    drop(v)
    zk = zk_session(user, password)
    try:
        base = "/histo/jobs/" + p["job"] + "/tasks"
        tasks = {n: json.loads(zk.get(base + "/" + n)[0]) for n in zk.get_children(base)}
    finally:
        zk.stop()
        zk.close()
    calls: list[list[Any]] = []
    for n, t in sorted(tasks.items()):
        hdr = dict(RESULT_HEADERS, **{"X-Histo-Job": p["job"], "X-Histo-Task": str(n), "X-Histo-Attempt": t["attempt"],
                                      "X-Histo-Phase": t["phase"], "X-Histo-Width": str(p["width"])})
        whose = "own" if t.get("worker") == CFG["name"] else "other's"
        calls.append(["replay " + whose, *https(p["leader"], p["port"], "/internal/v1/results", "POST", b"[]", hdr)])
    forged = dict(RESULT_HEADERS, **{"X-Histo-Job": p["job"], "X-Histo-Attempt": os.urandom(8).hex()})
    calls.append(["forged attempt", *https(p["leader"], p["port"], "/internal/v1/results", "POST", b"[]", forged)])
    return {"calls": calls}


# -- credentials: used and copied secret_id, expired certificate --------------------------------------------
def unwrap_twice(p: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {}
    with private_files({"role_id": p["role_id"] + "\n", "secret_id.wrap": p["wrap"] + "\n"}) as d:
        first = service_vault(creds=d)
        first.login()
        r["first"] = "logged in"
        r["secret_id"] = (d / "secret_id").read_text().strip()
        drop(first)
        (d / "secret_id").unlink()
        (d / "secret_id.wrap").write_text(p["wrap"] + "\n")
        r["second"] = login(service_vault(creds=d))
    return r


def read_creds(p: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {"role_id": (creds_dir() / "role_id").read_text().strip(),
         "secret_id": (creds_dir() / "secret_id").read_text().strip()}
    v = service_vault()
    v.login()
    r["own"] = "logged in"
    drop(v)
    return r


def login_with(p: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {}
    with private_files({"role_id": p["role_id"] + "\n", "secret_id": p["secret_id"] + "\n"}) as d:
        v = service_vault(creds=d, host=p["host"], role="worker")
        r["login"] = login(v)
        if r["login"] == "logged in":
            drop(v)
    return r


def expired(p: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {}
    v = service_vault()
    v.login()
    b = v.issue_cert(p["ttl"])
    ca = v.ca_chain_pem()
    fresh = v.issue_cert("60s")
    drop(v)
    with (private_files(tls_files(b.cert_pem + b.chain_pem, b.key_pem, ca)) as d,
          private_files(tls_files(fresh.cert_pem + fresh.chain_pem, fresh.key_pem, ca)) as f):
        time.sleep(max(0.0, b.not_after.timestamp() - time.time()) + 1.5)
        r["expired"] = list(https(p["master"], p["port"], "/internal/v1/results", "POST", b"[]", RESULT_HEADERS, tls=d))
        r["fresh"] = list(https(p["master"], p["port"], "/internal/v1/results", "POST", b"[]", RESULT_HEADERS, tls=f))
        r["lived"] = round(b.not_after.timestamp() - b.not_before.timestamp())
    return r


# -- address binding and revocation (issue 13, item 4) ----------------------------------------------------
def issue_variants(p: dict[str, Any]) -> dict[str, Any]:
    """This host's own Vault token asks for its own certificate without its address, with an empty
    one, with another host's; then with its own (the legitimate path)."""
    v = service_vault()
    v.login()
    base = {"common_name": f"{CFG['name']}.{CFG['trust_domain']}", "ttl": "60s", "format": "pem",
            "uri_sans": f"spiffe://{CFG['trust_domain']}/{CFG['role']}/{CFG['name']}", "private_key_format": "pkcs8"}
    r: dict[str, Any] = {}
    for what, ip in (("no IP SAN", None), ("empty IP SAN", ""), ("another host's address", p["other"]),
                     ("its own address", CFG["address"])):
        try:
            data: Any = v.client.write_data(f"pki_int/issue/host-{CFG['name']}",
                                            data=base if ip is None else {**base, "ip_sans": ip})
            r[what] = "issued" if data["data"]["certificate"] else "empty answer"
        except Exception as exc:  # hvac's refusal, whatever its class
            r[what] = "refused: " + type(exc).__name__
    drop(v)
    return r


def _keepalive(ctx: ssl.SSLContext, addr: str, port: int) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(addr, port, context=ctx, timeout=6, source_address=(CFG["address"], 0))
    conn.auto_open = 0  # this connection only: never a silent reconnect
    conn.connect()
    return conn


def _join(conn: http.client.HTTPSConnection) -> int:
    conn.request("POST", "/internal/v1/join", body=b"")
    resp = conn.getresponse()
    resp.read()
    return resp.status


def revocable(p: dict[str, Any]) -> dict[str, Any]:
    """A second certificate of this host's own identity (so the service's own stays untouched) holds a
    keep-alive connection to every master; once the controller has revoked its serial (it creates
    p["go"]), new connections with it must be refused within seconds and the held ones closed, while
    the service's own certificate is still accepted."""
    v = service_vault()
    v.login()
    b = v.issue_cert("600s")
    ca = v.ca_chain_pem()
    drop(v)
    r: dict[str, Any] = {"serial": b.serial}
    with private_files(tls_files(b.cert_pem + b.chain_pem, b.key_pem, ca)) as d:
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "cert.pem"), str(d / "key.pem"))
        kept = {m: _keepalive(ctx, m, p["port"]) for m in p["masters"]}
        r["before"] = {m: _join(c) for m, c in kept.items()}
        print(READY + json.dumps({"serial": b.serial}), flush=True)
        deadline = time.time() + 60
        while not Path(p["go"]).exists() and time.time() < deadline:
            time.sleep(0.1)
        t0 = time.time()
        r["refused_after"] = {}
        for m in p["masters"]:
            while time.time() - t0 < 15 and https(m, p["port"], "/internal/v1/join", "POST", tls=d)[0] != 403:
                time.sleep(0.2)
            r["refused_after"][m] = round(time.time() - t0, 1)
        r["refused_with"] = {m: list(https(m, p["port"], "/internal/v1/join", "POST", tls=d)) for m in p["masters"]}
        r["held_closed"] = 0
        for c in kept.values():
            try:
                _join(c)
            except (http.client.HTTPException, OSError):
                r["held_closed"] += 1
            c.close()
    r["own"] = {m: list(https(m, p["port"], "/internal/v1/join", "POST")) for m in p["masters"]}
    return r


TASKS = {f.__name__: f for f in (eavesdrop_worker, eavesdrop_master, read_tls, use_tls, own_tls, compromised, replay,
                                 unwrap_twice, read_creds, login_with, expired, issue_variants, revocable)}


def main() -> None:
    request = json.loads(sys.stdin.readline())
    os.umask(0o077)
    CFG.update(json.loads(next(p for p in Path("/etc/histo").iterdir()
                               if p.name in ("master.json", "worker.json")).read_text()))
    print(ANSWER + json.dumps(TASKS[request["task"]](request["payload"])))


if __name__ == "__main__":
    main()
