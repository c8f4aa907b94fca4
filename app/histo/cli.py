"""The `histo` command. Every failure ends with one readable line and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # hvac/urllib3 never log tokens at INFO, but keep their debug chatter out entirely.
    for noisy in ("urllib3", "kazoo.client", "kazoo.protocol.connection", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SystemExit(f"histo: cannot read {path}: {exc.strerror}") from None


def _vault_client(url: str, ca: str, token_file: str | None):
    from .vault.failover import failover_client
    client = failover_client(url, verify=ca)  # one node, or every raft node comma-separated
    if token_file:
        client.token = _read_secret_file(token_file)
    return client


def cmd_master(a) -> None:
    from .config import ServiceConfig
    from .master.service import run
    run(ServiceConfig.load(a.config))


def cmd_worker(a) -> None:
    from .config import ServiceConfig
    from .worker.service import run_worker
    run_worker(ServiceConfig.load(a.config))


def cmd_vault_setup(a) -> None:
    from hvac.exceptions import Forbidden
    from .vault.setup import apply
    spec = json.loads(Path(a.spec).read_text())
    try:
        out = apply(_vault_client(a.vault_url, a.vault_ca, a.token_file), spec)
    except Forbidden:
        raise SystemExit("histo: Vault refused a configuration change: the spec changed or Vault drifted, and this "
                         "token (histo-provisioner) may only verify it; a change needs a root token "
                         "(docs/SECURITY.md: regenerate one with the unseal keys, revoke it after)") from None
    print(json.dumps(out, sort_keys=True))


def cmd_pki(a) -> None:
    """Rotate the PKI intermediate or root live, or prune retired ones whose certificates have all expired."""
    from hvac.exceptions import Forbidden

    from .durations import parse_duration
    from .files import write_private
    from .vault import pki
    try:
        client = _vault_client(a.vault_url, a.vault_ca, a.token_file)
        if a.action == "roots":  # public certificates: no token needed
            pems = pki.roots_pem(client)
            text = "\n".join(pems) + "\n"
            changed = bool(a.out) and not (Path(a.out).is_file() and Path(a.out).read_text() == text)
            if changed:  # a CA certificate is public; rewritten only when it changed (provisioning's re-runs)
                write_private(Path(a.out), text, mode=0o644)
            out: object = {"roots": len(pems), "out": a.out, "changed": changed}
        elif not a.token_file:
            raise SystemExit(f"histo: pki {a.action} needs --token-file (a root token)")
        elif a.action == "rotate":
            out = pki.rotate(client, ttl=a.ttl)
        elif a.action == "root-stage":
            out = pki.root_stage(client, root_ttl=a.root_ttl, ttl=a.ttl)
        elif a.action == "root-finish":
            out = pki.root_finish(client, wait=None if a.wait is None else int(parse_duration(a.wait)))
        else:
            out = {"pruned": pki.prune(client, int(parse_duration(a.at_least)))}
    except Forbidden:
        raise SystemExit("histo: Vault refused the PKI change: it needs a root token (docs/SECURITY.md: "
                         "regenerate one with vault-generate-root, retire it after)") from None
    except (pki.PkiError, ValueError) as exc:
        raise SystemExit(f"histo: {exc}") from None
    print(json.dumps(out, sort_keys=True))


def cmd_vault_retire_root(a) -> None:
    from .vault.secretzero import retire_root
    out = retire_root(_vault_client(a.vault_url, a.vault_ca, None), Path(a.init_file), Path(a.provisioner_file),
                      Path(a.root_token_file) if a.root_token_file else None)
    print(json.dumps(out, sort_keys=True))


def cmd_vault_generate_root(a) -> None:
    from .vault.secretzero import generate_root
    try:
        out = generate_root(_vault_client(a.vault_url, a.vault_ca, a.token_file), Path(a.init_file), Path(a.out))
    except RuntimeError as exc:
        raise SystemExit(f"histo: {exc}") from None
    print(json.dumps(out, sort_keys=True))


def cmd_vault_unseal(a) -> None:
    from .vault.secretzero import unseal
    try:
        out = unseal(_vault_client(a.vault_url, a.vault_ca, None), Path(a.init_file))
    except RuntimeError as exc:
        raise SystemExit(f"histo: {exc}") from None
    print(json.dumps(out, sort_keys=True))


def cmd_vault_serving(a) -> None:
    """Wait until every Vault node serves a request (a standby by forwarding it): ready means ready."""
    from .vault.serving import wait_serving
    token = _read_secret_file(a.token_file)
    if not token:
        raise SystemExit(f"histo: vault-serving: no token in {a.token_file}")
    urls = [u.strip() for u in a.vault_url.split(",") if u.strip()]
    last = wait_serving(urls, a.vault_ca, token, timeout=a.timeout)
    failing = {u: why for u, why in last.items() if why is not None}
    if failing:
        raise SystemExit("histo: vault-serving: not serving after "
                         f"{a.timeout:.0f}s: " + "; ".join(f"{u}: {w}" for u, w in failing.items()))
    print(json.dumps({"serving": urls}))


def cmd_vault_operator_token(a) -> None:
    from .files import write_private
    from .vault.secretzero import operator_token
    tok = operator_token(_vault_client(a.vault_url, a.vault_ca, a.token_file), a.role, a.ttl, a.display_name)
    write_private(Path(a.out), tok + "\n")


def cmd_identity_revoke(a) -> None:
    from .vault.revoke import revoke
    client = _token_client(a)
    try:
        out = revoke(client, serial=a.serial, host=a.host, block=a.block)
    except ValueError as exc:
        raise SystemExit(f"histo: {exc}") from None
    print(json.dumps(out, sort_keys=True))


def _token_client(a):
    """A client holding the --token-file's token (local mode: the root token of its init.json)."""
    client = _vault_client(a.vault_url, a.vault_ca, None)
    text = _read_secret_file(a.token_file)
    if text.startswith("{"):  # local mode's secret zero file (.histo/local/vault/init.json)
        text = json.loads(text)["root_token"]
    client.token = text
    return client


def cmd_quarantine_sync(a) -> None:
    """`histo quarantine sync`: this machine's firewall drops the quarantined hosts (secops/fence.py)."""
    import shlex

    from .secops.fence import Fence, NftSet
    from .vault.client import ServiceVault
    from .vault.quarantine import quarantined_hosts
    try:
        hosts = json.loads(Path(a.hosts_file).read_text())["hosts"]
        me = next(h for h in hosts if h["name"] == a.host)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        raise SystemExit(f"histo: quarantine sync: {a.hosts_file} does not list {a.host} "
                         "(JSON {hosts: [{name, role, address}]})") from None
    vault = ServiceVault(a.vault_url, a.vault_ca, host=a.host, role=me["role"], creds_dir=Path(a.creds),
                         source_address=a.source_address or me["address"])

    def names() -> set[str]:
        vault.renew_if_needed()  # logs in again when the token is gone (a restart, its max TTL)
        return quarantined_hosts(vault.client)
    fence = Fence(names, hosts, a.host, NftSet(shlex.split(a.nft)), a.interval)
    if a.once:
        changed = fence.sync()
        print(json.dumps({"dropped": sorted(fence.applied or ()), "changed": changed, "error": fence.error or None}))
        if fence.error:
            raise SystemExit(f"histo: quarantine sync: {fence.error}")
        return
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    fence.run()


def cmd_quarantine(a) -> None:
    """`histo quarantine list | contain HOST --reason TEXT | release HOST` (vault/quarantine.py)."""
    import time

    from hvac.exceptions import VaultError

    from .vault import quarantine as q
    client = _token_client(a)
    try:
        if a.qcmd == "list":
            out: object = q.list_quarantined(client)
        elif a.qcmd == "contain":
            if not a.force:
                if not a.inventory:
                    raise SystemExit("histo: quarantine contain: give --inventory FILE (the guard rails need "
                                     "every host's role) or --force")
                why = q.guard(_inventory_hosts(a.inventory), q.quarantined_hosts(client), a.host)
                if why:
                    raise SystemExit(f"histo: quarantine contain: refused: {why} (--force to contain it anyway)")
            out = q.contain(client, a.host, {"id": f"manual-{int(time.time())}", "rule": "manual",
                                             "reason": a.reason})
        else:
            out = q.release(client, a.host)
    except q.QuarantineError as exc:
        raise SystemExit(f"histo: quarantine {a.qcmd}: {exc}") from None
    except VaultError as exc:
        raise SystemExit(f"histo: quarantine {a.qcmd}: Vault refused ({q._reason(exc)})") from None
    print(json.dumps(out, sort_keys=True))
    if isinstance(out, dict) and out.get("contained") is False:
        failed = ", ".join(x["name"] for x in out["actions"] if not x["ok"])
        raise SystemExit(f"histo: quarantine contain: {a.host} only partly contained (failed: {failed})")


def _inventory_hosts(path: str) -> list[dict]:
    try:
        hosts = json.loads(Path(path).read_text())["hosts"]
        return [{"name": str(h["name"]), "role": str(h["role"])} for h in hosts]
    except OSError as exc:
        raise SystemExit(f"histo: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError):
        raise SystemExit(f"histo: {path} is no inventory (JSON with hosts: name, role)") from None


def cmd_provision(a) -> None:
    from .vault.provision import wrapped_secret_id, write_credentials
    client = _vault_client(a.vault_url, a.vault_ca, a.token_file)
    role_id = client.auth.approle.read_role_id(f"histo-{a.host}")["data"]["role_id"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_credentials(out, role_id, wrapped_secret_id(client, a.host, a.address, a.wrap_ttl))
    print(json.dumps({"host": a.host, "out": str(out)}))


def cmd_vault_tls(a) -> None:
    from .tls.selfsigned import ensure_bootstrap_tls, listener_problem, load_ca
    if a.check_installed:
        # the certificate a node has installed, on stdin (public): keep it, or install the fallback?
        try:
            why = listener_problem(sys.stdin.buffer.read(), load_ca(Path(a.dir)), a.hostname, a.address)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"histo: vault-tls: {exc}") from None
        print(json.dumps({"install": why is not None, "why": why or ""}))
        return
    dirs = [Path(a.dir)] + ([Path(a.leaf_dir)] if a.leaf_dir else [])

    def pems() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for d in dirs if d.exists() for p in d.glob("*.pem")}
    before = pems()
    ensure_bootstrap_tls(Path(a.dir), a.hostname, a.address, leaf_dir=Path(a.leaf_dir) if a.leaf_dir else None)
    after = pems()
    print(json.dumps({"changed": before != after, "dir": a.dir}))


def cmd_vault_listener_renew(a) -> None:
    from .vault import listener
    from .vault.client import VaultAuthError, VaultUnavailable
    if a.loop is not None and a.loop <= 0:
        raise SystemExit("histo: vault-listener-renew: --loop takes a positive number of seconds")
    try:
        out = listener.run(Path(a.config), a.loop)
    except (listener.ListenerError, VaultAuthError, VaultUnavailable) as exc:
        raise SystemExit(f"histo: vault-listener-renew: {exc}") from None
    print(json.dumps(out, sort_keys=True))


def cmd_vault_seal_key(a) -> None:
    from .vault.sealkey import ensure_seal_key
    try:
        changed = ensure_seal_key(Path(a.file))
    except ValueError as exc:
        raise SystemExit(f"histo: {exc}") from None
    print(json.dumps({"changed": changed, "file": a.file}))


def cmd_zk_prepare(a) -> None:
    from .zk.prepare import prepare
    prepare(Path(a.config))


def cmd_zk_renew(a) -> None:
    from .zk import renew
    from .zk.config import ZkConfig
    config = Path(a.config)
    if a.restart == "process":
        restart = renew.process_restart(config)
    elif a.restart == "request":
        zk = ZkConfig.from_json(json.loads(config.read_text()))
        restart = renew.requested_restart(Path(a.restart_flag) if a.restart_flag else zk.dir / "restart-request", zk)
    else:
        restart = renew.systemd_restart()
    renew.run(config, restart, a.loop)


def cmd_zk_exec(a) -> None:
    from .zk.config import exec_server
    exec_server(Path(a.config))


def cmd_token_issue(a) -> None:
    from .edge.tokens import issue_token, parse_ttl
    client = _vault_client(a.vault_url, a.vault_ca, a.token_file)
    print(issue_token(client, role=a.role, subject=a.subject, ttl_seconds=parse_ttl(a.ttl)))


def cmd_env_write(a) -> None:
    from .durations import parse_duration
    from .envfile import write_env
    if any("=" not in kv for kv in a.set):
        raise SystemExit("histo: env write: --set takes KEY=VALUE")
    extra = dict(kv.split("=", 1) for kv in a.set)
    write_env(Path(a.out), a.url, Path(a.ca), _vault_client(a.vault_url, a.vault_ca, a.token_file),
              parse_duration(a.ttl), extra, a.public_url)
    print(json.dumps({"env": a.out}))

def cmd_env_refresh(a) -> None:
    from . import envrefresh
    if a.stop:
        print(json.dumps({"stopped": envrefresh.stop(Path(a.stop))}))
        return
    if a.start:
        if not (a.vault_url and a.vault_ca):
            raise SystemExit("histo: env refresh --start needs --vault-url and --vault-ca")
        print(json.dumps({"started": envrefresh.start(Path(a.start), a.vault_url, a.vault_ca, a.loop or 30.0)}))
        return
    if not a.config:
        raise SystemExit("histo: env refresh: give --config, --start STATE or --stop STATE")
    try:
        out = envrefresh.run(Path(a.config), a.loop)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"histo: env refresh: {exc}") from None
    print(json.dumps(out, sort_keys=True))


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"histo: receipt: cannot read the {what} {path}: {exc.strerror}") from None


def _receipt_keys(a) -> dict[str, str]:
    """kid -> PEM: from Vault (a token with the histo-receipt-verifier policy) or from a file."""
    from .edge.receipts import KEY
    from .edge.tokens import vault_public_keys
    if not a.token_file:
        raise SystemExit("histo: receipt: give --public-key FILE or --token-file (a Vault token that may read "
                         f"transit/keys/{KEY})")
    try:
        keys = vault_public_keys(_vault_client(a.vault_url, a.vault_ca, a.token_file), key=KEY)
    except SystemExit:
        raise
    except Exception as exc:
        raise SystemExit(f"histo: receipt: cannot read the receipt keys from Vault ({type(exc).__name__})") from None
    if not keys:
        raise SystemExit(f"histo: receipt: Vault holds no public key of {KEY}")
    return keys


def cmd_receipt_verify(a) -> None:
    from .edge import receipts
    jws = _read_file(a.receipt, "receipt").decode("ascii", "replace").strip()
    image = _read_file(a.image, "image")
    upload = _read_file(a.upload, "upload") if a.upload else None
    def keys_for(kid: str) -> dict[str, str]:
        if a.public_key:
            return receipts.load_keys(_read_file(a.public_key, "public key").decode("utf-8", "replace"), kid)
        return _receipt_keys(a)
    from .client.commands import print_verified
    print_verified(jws, keys_for, image, upload, "receipt", a.public_key)


def cmd_receipt_keys(a) -> None:
    print(json.dumps(_receipt_keys(a), indent=1, sort_keys=True))


def _inventory(path: str):
    from .secops.sources import Inventory
    try:
        spec = json.loads("\n".join(_lines(Path(path), "inventory")) or "null")
        return Inventory(spec["hosts"], spec.get("ports"))
    except (ValueError, TypeError, KeyError):
        raise SystemExit(f"histo: audit: {path} is no inventory (JSON with hosts: name, role, address)") from None


def _responder(a, client):
    """Detection (the rules file) and the response (--respond quarantine; alert: a dry run)."""
    from .secops.detect import Detector
    from .secops.respond import Responder
    from .secops.rules import RulesError, load_rules
    from .vault.quarantine import contain, guard, quarantined_hosts
    if not a.inventory:
        raise SystemExit("histo: audit: --respond needs --inventory (who is who, and the guard rails)")
    try:
        rules = load_rules(a.rules)
    except RulesError as exc:
        raise SystemExit(f"histo: rules: {exc}") from None
    hosts = json.loads("\n".join(_lines(Path(a.inventory), "inventory")))["hosts"]
    try:
        held = quarantined_hosts(client())
    except Exception:  # Vault away now: the guard rails count what this collector contains from here on
        held = set()
    return Detector(rules), Responder(contain=lambda host, inc: contain(client(), host, inc),
                                      guard=lambda host, now_held: guard(hosts, now_held, host),
                                      record=lambda event: None, held=held, dry_run=a.respond == "alert")


def cmd_audit_collect(a) -> None:
    from .secops.checkpoint import VaultCheckpointSigner, VaultKvAnchor
    from .secops.collector import Collector
    from .tls.identity import spiffe_id
    from .vault.client import ServiceVault
    vault = ServiceVault(a.vault_url, a.vault_ca, host=a.host, role="secops", creds_dir=Path(a.creds),
                         source_address=a.source_address)
    vault.login()
    from .secops.chain import RecordBusy
    client = lambda: vault.client  # noqa: E731 (the session's client, re-read after a re-login)
    detector, responder = _responder(a, client) if a.respond != "off" else (None, None)
    try:
        collector = Collector(Path(a.log), VaultCheckpointSigner(client, a.host, spiffe_id("secops", a.host)),
                              VaultKvAnchor(client, a.host), a.interval, upkeep=vault.renew_if_needed,
                              inventory=_inventory(a.inventory) if a.inventory else None, self_host=a.host,
                              detector=detector, responder=responder)
        if responder is not None:
            responder.record = collector.record
    except ValueError as exc:  # the existing log's chain does not hold: never extend it
        raise SystemExit(f"histo: audit: refusing to extend {exc}") from None
    except RecordBusy as exc:  # the previous collector has not exited: rsyslog starts this one again
        raise SystemExit(f"histo: audit: {exc}") from None
    with (open(a.input, encoding="utf-8", errors="replace") if a.input else sys.stdin) as source:
        n = collector.run(source, sys.stdout if a.confirm else None)
    print(json.dumps({"stored": n, "head": collector.log.head.seq}), file=sys.stderr)


def _lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SystemExit(f"histo: audit: cannot read the {what} {path}: {exc.strerror}") from None


def cmd_audit_verify(a) -> None:
    from .edge.tokens import vault_public_keys
    from .secops.checkpoint import VaultKvAnchor, key_name
    from .secops.collector import checkpoints_path
    from .secops.verify import audit
    from .tls.identity import spiffe_id
    log_path = Path(a.log)
    if not log_path.is_file():
        raise SystemExit(f"histo: audit: no log at {log_path}")
    anchored: list[str] = []
    if a.public_key:
        try:
            keys = json.loads("\n".join(_lines(Path(a.public_key), "public keys")) or "null")
            if not isinstance(keys, dict):
                raise ValueError
        except ValueError:
            raise SystemExit(f"histo: audit: {a.public_key} is not the JSON of kid -> PEM") from None
    if a.token_file:
        try:
            client = _vault_client(a.vault_url, a.vault_ca, a.token_file)
            if not a.public_key:
                keys = vault_public_keys(client, key=key_name(a.host))
            anchored = VaultKvAnchor(lambda: client, a.host).history()
        except SystemExit:
            raise
        except Exception as exc:
            raise SystemExit(f"histo: audit: cannot read the checkpoint keys or anchor from Vault "
                             f"({type(exc).__name__})") from None
    elif not a.public_key:
        raise SystemExit("histo: audit: give --token-file (policy histo-audit-verifier) or --public-key FILE")
    cps = Path(a.checkpoints) if a.checkpoints else checkpoints_path(log_path)
    report = audit(_lines(log_path, "log"), _lines(cps, "checkpoints"), anchored, keys,
                   collector=spiffe_id("secops", a.host))
    for note in report.notes:
        print(f"histo: audit: note: {note}", file=sys.stderr)
    if not report.ok:
        raise SystemExit(f"histo: audit: {report.summary()}")
    print(report.summary())


def cmd_secops_rules_check(a) -> None:
    """Validate a rules file (the packaged one by default): one line on the first fault, else a summary."""
    from .secops.rules import RulesError, load_rules
    try:
        rules = load_rules(a.rules)
    except RulesError as exc:
        raise SystemExit(f"histo: rules: {exc}") from None
    print(json.dumps({"rules": len(rules), "quarantine": [r.name for r in rules if r.response == "quarantine"],
                      "alert": [r.name for r in rules if r.response == "alert"],
                      "detail": [r.summary() for r in rules]}, indent=1))


def cmd_secops_replay(a) -> None:
    """The rules over a layer's own files (Vault's audit log, ZooKeeper's refusals file): the incidents
    the collector would have opened. Exit 0 either way; the JSON says how many."""
    from .secops.replay import read_files, replay, summary
    from .secops.rules import RulesError, load_rules
    try:
        rules = load_rules(a.rules)
    except RulesError as exc:
        raise SystemExit(f"histo: rules: {exc}") from None
    inventory = _inventory(a.inventory)
    paths = [Path(p) for p in a.files]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"histo: secops replay: {p}: no such file")
    print(json.dumps(summary(*replay(read_files(paths, a.zookeeper_host), inventory, rules)), indent=1))


def cmd_tls_files(a) -> None:
    from .secops.tlsfiles import ensure
    from .vault.client import ServiceVault, VaultAuthError, VaultUnavailable
    from .vault.secretid import SecretIdKeeper
    vault = ServiceVault(a.vault_url, a.vault_ca, host=a.host, role=a.role, creds_dir=Path(a.creds),
                         source_address=a.source_address)
    try:
        result = ensure(vault, Path(a.out), a.ttl)
        # the credentials the files are issued with have a life too (720 h): the same timer keeps the
        # stored secret_id alive (a new one at 2/3, proven by a login, the old one destroyed)
        if not vault.client.token:
            vault.login()
        result["secret_id_renewed"] = SecretIdKeeper(vault).renew_if_needed()
    except (VaultAuthError, VaultUnavailable) as exc:
        raise SystemExit(f"histo: tls-files: {exc}") from None
    print(json.dumps(result, sort_keys=True))
    import subprocess
    if result["changed"] and a.restart:  # the reader of the files takes the new ones (a renewal)
        subprocess.run(["systemctl", "try-restart", *a.restart], check=True)


def cmd_secops_relay(a) -> None:
    import asyncio
    import signal
    from . import TRUST_DOMAIN
    from .secops import relay
    tls = Path(a.tls_dir) if a.tls_dir else None
    if tls is None:
        raise SystemExit("histo: secops relay: give --tls-dir (cert.pem, key.pem, ca.pem) or run it from its "
                         "systemd unit ($CREDENTIALS_DIRECTORY)")
    try:
        masters = relay.parse_masters(a.master)
    except ValueError as exc:
        raise SystemExit(f"histo: secops relay: {exc}") from None
    if not masters:
        raise SystemExit("histo: secops relay: give at least one --master NAME=https://ADDRESS:PORT")
    state = Path(a.state)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    # "-": the record is the descriptor systemd opened read-only as our stdin; a path: opened read-only here
    fd = sys.stdin.fileno() if a.record == "-" else os.open(a.record, os.O_RDONLY)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await relay.serve(fd, masters, tls / "ca.pem", tls / "cert.pem", tls / "key.pem", state,
                          a.trust_domain or TRUST_DOMAIN, a.source_address, backlog=a.backlog,
                          interval=a.interval, stop=stop)
    asyncio.run(main())


def cmd_wait_ready(a) -> None:
    from .readiness import wait_ready
    wait_ready(a.url, Path(a.ca), a.workers, a.masters, a.timeout)
    print(json.dumps({"ready": a.url}))


def cmd_local(a) -> None:
    from .local import cluster
    root = Path(a.state or ".histo/local")
    if a.action == "up":
        from .lifetimes import profile
        cluster.up(root, masters=a.masters, workers=a.workers, cert_ttl=a.cert_ttl, lifetimes=profile(a.lifetimes),
                   vault_nodes=a.vault_nodes, readmit=a.readmit or "")
    elif a.action == "down":
        cluster.down(root)
    else:
        print(json.dumps(cluster.status(root), indent=2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="histo", description="secured distributed histogram equalization")
    p.add_argument("--log-level", default=os.environ.get("HISTO_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="cmd", required=True)

    for name, fn in (("master", cmd_master), ("worker", cmd_worker), ("zk-prepare", cmd_zk_prepare),
                     ("zk-exec", cmd_zk_exec)):
        s = sub.add_parser(name)
        s.add_argument("--config", required=True)
        s.set_defaults(fn=fn)

    s = sub.add_parser("zk-renew", help="a ZooKeeper host's secret_id, and its certificates by a restart (zk/renew.py)")
    s.add_argument("--config", required=True)
    s.add_argument("--restart", choices=("systemd", "request", "process"), default="systemd",
                   help="systemd: restart the histo-zookeeper unit (root); request: as the server's own user, "
                        "ask the root path unit histo-zookeeper-restart.path by rewriting --restart-flag; "
                        "process: by pid file (local mode)")
    s.add_argument("--restart-flag", default=None, metavar="PATH",
                   help="with --restart request: the file the path unit watches (default: <state_dir>/restart-request)")
    s.add_argument("--loop", type=float, default=None, metavar="SECONDS", help="repeat every SECONDS")
    s.set_defaults(fn=cmd_zk_renew)

    def vault_args(s, token_required=True, token_help="file holding a Vault token (never on the command line)"):
        s.add_argument("--vault-url", default=os.environ.get("VAULT_ADDR", "https://127.0.10.10:8200"),
                       help="one Vault node, or every raft node comma-separated (fails over)")
        s.add_argument("--vault-ca", default=os.environ.get("VAULT_CACERT", ".histo/local/vault/tls/ca.pem"))
        s.add_argument("--token-file", required=token_required, help=token_help)

    s = sub.add_parser("vault-tls", help="bootstrap CA and listener certificate for Vault itself (idempotent)")
    s.add_argument("--dir", required=True)
    s.add_argument("--hostname", action="append", required=True)
    s.add_argument("--address", action="append", default=[])
    s.add_argument("--leaf-dir", help="the node's own certificate folder (raft peers share the CA in --dir)")
    s.add_argument("--check-installed", action="store_true",
                   help="read an installed listener certificate on stdin and print whether the fallback "
                        "must replace it (missing, not chained to the CA, other names, or in its last third)")
    s.set_defaults(fn=cmd_vault_tls)

    s = sub.add_parser("vault-listener-renew",
                       help="this Vault node's listener certificate from pki_vault at 2/3 of its life, then "
                            "SIGHUP to the server (vault/listener.py)")
    s.add_argument("--config", required=True, help="JSON: host, address, port, hostnames, vault_url, vault_ca, "
                                                   "creds_dir, cert, key, ttl, server_unit or server_pid_file")
    s.add_argument("--loop", type=float, default=None, help="seconds between passes (default: one pass)")
    s.set_defaults(fn=cmd_vault_listener_renew)

    s = sub.add_parser("vault-seal-key", help="the static seal's key file (32 random bytes, 0600), made once")
    s.add_argument("--file", required=True)
    s.set_defaults(fn=cmd_vault_seal_key)

    s = sub.add_parser("vault-setup")
    s.add_argument("--spec", required=True)
    vault_args(s)
    s.set_defaults(fn=cmd_vault_setup)

    s = sub.add_parser("pki", help="rotate: a new PKI intermediate issues from now on, the old one is retired "
                                   "(still trusted, still revoking) until its last certificate expires; prune: "
                                   "delete retired intermediates and roots once every certificate they issued has "
                                   "expired; root-stage, then root-finish: a new root, published before anything "
                                   "it signs is used; roots: every root, for clients of the public API")
    s.add_argument("action", choices=("rotate", "prune", "root-stage", "root-finish", "roots"))
    s.add_argument("--ttl", default="43800h", help="rotate, root-stage: the new intermediate's life (default 43800h)")
    s.add_argument("--root-ttl", default="87600h", help="root-stage: the new root's life (default 87600h)")
    s.add_argument("--wait", help="root-finish: at least this long after root-stage (default and safe: the PKI "
                                  "roles' longest max_ttl, read from Vault: every peer has renewed its bundle)")
    s.add_argument("--at-least", default="0s", help="prune: wait at least this long after a retirement (the PKI "
                                                    "roles' longest max_ttl, read from Vault, is always waited)")
    s.add_argument("--out", help="roots: write them (PEM, 0644) to this file, e.g. the HISTO_CA file")
    vault_args(s, token_required=False,
               token_help="a root token (vault-generate-root): the provisioner token may not change the PKI")
    s.set_defaults(fn=cmd_pki)

    s = sub.add_parser("vault-retire-root", help="once setup is done: make the provisioner token, revoke the "
                                                  "root token, keep only the unseal keys in the init file")
    s.add_argument("--init-file", required=True)
    s.add_argument("--provisioner-file", required=True)
    s.add_argument("--root-token-file")
    vault_args(s, token_required=False)
    s.set_defaults(fn=cmd_vault_retire_root)

    s = sub.add_parser("vault-generate-root", help="only when truly needed: a new root token from the unseal keys "
                                                   "(0600 file); retire it again with vault-retire-root")
    s.add_argument("--init-file", required=True, help="the unseal keys (vault-init.json)")
    s.add_argument("--out", required=True, help="where to write the root token (0600)")
    vault_args(s, token_help="the provisioner token: OpenBao starts a generation only for an authenticated "
                             "caller; only the unseal keys complete it")
    s.set_defaults(fn=cmd_vault_generate_root)

    s = sub.add_parser("vault-unseal", help="unseal Vault with the unseal keys (no token); idempotent")
    s.add_argument("--init-file", required=True, help="the unseal keys (vault-init.json)")
    vault_args(s, token_required=False)
    s.set_defaults(fn=cmd_vault_unseal)

    s = sub.add_parser("vault-serving", help="wait until every Vault node (--vault-url, comma-separated) serves "
                                             "a request, a standby by forwarding it; exit 1 naming those that do not")
    s.add_argument("--timeout", type=float, default=180.0)
    vault_args(s, token_help="any token of the cluster's (the operator's issuer token): the probe is its "
                             "lookup of itself, allowed by the default policy")
    s.set_defaults(fn=cmd_vault_serving)

    s = sub.add_parser("vault-operator-token", help="the operator's issuer or receipt-verifier token (0600 file), "
                                                    "through its token role, with the provisioner token")
    s.add_argument("--role", required=True, choices=("histo-issuer", "histo-receipt-verifier",
                                                            "histo-audit-verifier"))
    s.add_argument("--ttl", default="72h")
    s.add_argument("--display-name", default="histo-operator")
    s.add_argument("--out", required=True)
    vault_args(s)
    s.set_defaults(fn=cmd_vault_operator_token)

    s = sub.add_parser("provision")
    s.add_argument("--host", required=True)
    s.add_argument("--address", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--wrap-ttl", default="300s")
    vault_args(s)
    s.set_defaults(fn=cmd_provision)

    ident = sub.add_parser("identity", help="workload identities").add_subparsers(dest="icmd", required=True)
    s = ident.add_parser("revoke", help="revoke a certificate serial or every certificate of a host; peers "
                                        "refuse it and close its connections within seconds")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--serial", help="a certificate serial (Vault's aa:bb:.. or plain hex)")
    g.add_argument("--host", help="every unexpired certificate of this host")
    s.add_argument("--block", action="store_true",
                   help="with --host: also deny the host any new certificate (re-admit: vault-setup + provision)")
    vault_args(s, token_help="file holding a token with the histo-provisioner policy (local mode: "
                             ".histo/local/vault/init.json)")
    s.set_defaults(fn=cmd_identity_revoke)

    quar = sub.add_parser("quarantine", help="a compromised host's Vault identity cut off, and given back "
                                             "(vault/quarantine.py)").add_subparsers(dest="qcmd", required=True)
    q_token = ("file holding a Vault token (list: a master's or the provisioner's; contain: the SecOps "
               "collector's; release: the provisioner's; local mode: .histo/local/vault/init.json)")
    s = quar.add_parser("list", help="the quarantined hosts and their records")
    vault_args(s, token_help=q_token)
    s.set_defaults(fn=cmd_quarantine)
    s = quar.add_parser("contain", help="quarantine a host now: its policy emptied, secret_ids destroyed, PKI role "
                                        "deleted, certificates revoked, a record written")
    s.add_argument("host")
    s.add_argument("--reason", required=True, help="why (kept in the quarantine record)")
    s.add_argument("--inventory", help="JSON with hosts (name, role): the guard rails need it unless --force")
    s.add_argument("--force", action="store_true", help="contain even what the guard rails refuse (a vault, "
                                                        "zookeeper or secops host, the last master or worker)")
    vault_args(s, token_help=q_token)
    s.set_defaults(fn=cmd_quarantine)
    s = quar.add_parser("release", help="end a quarantine once vault-setup and provision gave the host a fresh "
                                        "identity (refused before)")
    s.add_argument("host")
    vault_args(s, token_help=q_token)
    s.set_defaults(fn=cmd_quarantine)
    s = quar.add_parser("sync", help="keep this machine's nftables set of quarantined addresses equal to the list "
                                     "(every machine, a service of roles/logship)")
    s.add_argument("--host", required=True, help="this machine's inventory name (its AppRole)")
    s.add_argument("--hosts-file", required=True, help="JSON {hosts: [{name, role, address}]}: names to addresses")
    s.add_argument("--creds", required=True, help="this machine's role_id and secret_id (the logship ones)")
    s.add_argument("--source-address", default=None, help="default: this host's address in --hosts-file")
    s.add_argument("--interval", type=float, default=2.0)
    s.add_argument("--nft", default="nft", help="the nft command (tests: 'ip netns exec NS nft')")
    s.add_argument("--once", action="store_true", help="one pass, then print what is dropped")
    vault_args(s, False)
    s.set_defaults(fn=cmd_quarantine_sync)

    tok = sub.add_parser("token").add_subparsers(dest="tcmd", required=True)
    s = tok.add_parser("issue")
    s.add_argument("--role", required=True, choices=("uploader", "viewer", "admin"))
    s.add_argument("--subject", required=True)
    s.add_argument("--ttl", default="15m")
    vault_args(s)
    s.set_defaults(fn=cmd_token_issue)

    envp = sub.add_parser("env").add_subparsers(dest="ecmd", required=True)
    s = envp.add_parser("write", help="the operator's env file (0600): URLs, CA and short-lived tokens")
    s.add_argument("--out", required=True)
    s.add_argument("--url", action="append", required=True, help="a master's public URL (repeat)")
    s.add_argument("--public-url", help="the cluster's floating public URL (HISTO_URL; else the first --url)")
    s.add_argument("--ca", required=True, help="the CA bundle clients verify the masters with")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another line for the file")
    s.add_argument("--ttl", default="1h")
    vault_args(s)
    s.set_defaults(fn=cmd_env_write)
    s = envp.add_parser("refresh", help="renew the env file's tokens and the issuer token at 2/3 of their life "
                                        "(envrefresh.py); --loop keeps doing it")
    s.add_argument("--config", required=False, help="JSON: env, issuer_token_file, provisioner_token_file, "
                                                    "vault_url, vault_ca")
    s.add_argument("--loop", type=float, default=None, metavar="SECONDS", help="repeat every SECONDS")
    s.add_argument("--start", metavar="STATE", help="instead: start the refresher of a state folder "
                                                    "(.histo/vagrant) in the background, once")
    s.add_argument("--stop", metavar="STATE", help="instead: stop the refresher of a state folder")
    s.add_argument("--vault-url", help="with --start: every Vault node, comma-separated")
    s.add_argument("--vault-ca", help="with --start: the CA of Vault's listener")
    s.set_defaults(fn=cmd_env_refresh)

    rec = sub.add_parser("receipt", help="check a job receipt offline").add_subparsers(dest="rcmd", required=True)

    def receipt_vault_args(s):
        vault_args(s, False, "file holding a Vault token with the histo-receipt-verifier policy")

    s = rec.add_parser("verify", help="signature, claims and SHA-256 of the result (and upload)")
    s.add_argument("--receipt", required=True, help="the JWS from GET /api/v1/jobs/{id}/receipt")
    s.add_argument("--image", required=True, help="the result downloaded from GET /api/v1/jobs/{id}/result")
    s.add_argument("--upload", help="the image that was uploaded (optional)")
    s.add_argument("--public-key", help="a PEM, or the JSON of `histo receipt keys` (no Vault needed then)")
    receipt_vault_args(s)
    s.set_defaults(fn=cmd_receipt_verify)
    s = rec.add_parser("keys", help="print the receipt public keys (kid -> PEM) for offline verification")
    receipt_vault_args(s)
    s.set_defaults(fn=cmd_receipt_keys)

    aud = sub.add_parser("audit", help="the SecOps log: collect, verify").add_subparsers(dest="acmd", required=True)
    s = aud.add_parser("collect", help="append events (one a line, stdin or --input) to the hash-chained log, "
                                       "signed checkpoints every --interval seconds")
    s.add_argument("--log", required=True)
    s.add_argument("--host", required=True, help="this collector's inventory host (its AppRole and transit key)")
    s.add_argument("--creds", required=True, help="its provisioned role_id and secret_id")
    s.add_argument("--source-address", default=None)
    s.add_argument("--interval", type=float, default=5.0)
    s.add_argument("--input", default=None, help="a file instead of stdin (local mode)")
    s.add_argument("--confirm", action="store_true", help="answer OK per stored line (rsyslog omprog)")
    s.add_argument("--inventory", default=None, help="JSON {hosts: [{name, role, address}], ports: {...}} "
                                                     "(the Vault spec will do): attribute refusals to hosts")
    s.add_argument("--respond", choices=("off", "alert", "quarantine"), default="off",
                   help="detect with the rules and respond: quarantine as each rule says, or alert only (a dry "
                        "run); every decision goes into the log")
    s.add_argument("--rules", default=None, help="the rules file (default: the packaged secops/rules.yaml)")
    vault_args(s, False)
    s.set_defaults(fn=cmd_audit_collect)
    s = aud.add_parser("verify", help="check a log against its signed checkpoints; names the first bad entry")
    s.add_argument("--log", required=True)
    s.add_argument("--host", required=True, help="the collector's inventory host")
    s.add_argument("--checkpoints", default=None, help="default: <log>.checkpoints")
    s.add_argument("--public-key", help="JSON kid -> PEM of the collector's key (then no Vault, no anchor)")
    vault_args(s, False, "file holding a Vault token with the histo-audit-verifier policy")
    s.set_defaults(fn=cmd_audit_verify)

    sec = sub.add_parser("secops", help="the SecOps detection rules and the collector's relay").add_subparsers(
        dest="scmd", required=True)
    s = sec.add_parser("rules-check", help="validate the detection rules (the packaged rules.yaml, or --rules "
                                           "FILE); prints a JSON summary, or one line naming the fault")
    s.add_argument("--rules", default=None, metavar="FILE")
    s.set_defaults(fn=cmd_secops_rules_check)
    s = sec.add_parser("replay", help="the rules over Vault audit logs and ZooKeeper refusal files: the "
                                      "incidents the collector would have opened (JSON)")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("--inventory", required=True, help="JSON with hosts: name, role, address")
    s.add_argument("--rules", default=None, metavar="FILE")
    s.add_argument("--zookeeper-host", default="zk1", help="the server a ZooKeeper file is from")
    s.set_defaults(fn=cmd_secops_replay)
    s = sec.add_parser("relay", help="follow the record and push its attributed refusals to every master "
                                     "(mTLS, this host's certificate); resumes where each master stopped")
    s.add_argument("--record", default="-", help="the record; '-' (default): stdin, opened read-only by systemd")
    s.add_argument("--state", required=True, help="folder of the relay's state (what each master acknowledged)")
    s.add_argument("--master", action="append", default=[], help="NAME=https://ADDRESS:PORT of a master's "
                                                                   "internal listener (repeat)")
    s.add_argument("--tls-dir", default=os.environ.get("CREDENTIALS_DIRECTORY"),
                   help="cert.pem, key.pem, ca.pem (default: $CREDENTIALS_DIRECTORY)")
    s.add_argument("--source-address", default=None, help="this host's cluster address (its certificate's IP SAN)")
    s.add_argument("--trust-domain", default=None)
    s.add_argument("--backlog", type=int, default=0, help="first start: also push the last N refusals")
    s.add_argument("--interval", type=float, default=0.5, help="seconds between looks at the record")
    s.set_defaults(fn=cmd_secops_relay)

    s = sub.add_parser("tls-files", help="this host's certificate, key and the histo CA chain as files (rsyslog's "
                                         "RELP over TLS), issued with its own AppRole when missing or 2/3 through "
                                         "its life; prints {\"changed\": ...}")
    s.add_argument("--host", required=True, help="this host's inventory name (its AppRole and PKI role)")
    s.add_argument("--role", required=True, choices=("master", "worker", "zookeeper", "secops", "vault"))
    s.add_argument("--creds", required=True, help="its provisioned role_id and secret_id")
    s.add_argument("--out", required=True, help="folder of cert.pem, key.pem (0600), ca.pem")
    s.add_argument("--source-address", default=None, help="this host's cluster address (named in the certificate)")
    s.add_argument("--ttl", default="24h")
    s.add_argument("--restart", action="append", default=[],
                   help="systemd unit to try-restart when the files changed (repeat: every reader of the files)")
    vault_args(s, False)
    s.set_defaults(fn=cmd_tls_files)

    s = sub.add_parser("wait-ready", help="until an upload through every master would be accepted (live members only)")
    s.add_argument("--url", action="append", required=True, help="a master's public URL (repeat)")
    s.add_argument("--ca", required=True)
    s.add_argument("--workers", type=int, required=True)
    s.add_argument("--masters", type=int, required=True)
    s.add_argument("--timeout", type=float, default=120.0)
    s.set_defaults(fn=cmd_wait_ready)

    from .client.commands import register as user_commands
    user_commands(sub)  # login, upload, jobs, get, verify

    s = sub.add_parser("local")
    s.add_argument("action", choices=("up", "down", "status"))
    s.add_argument("--state", default=None)
    s.add_argument("--masters", type=int, default=2)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--cert-ttl", default=None, help="the services' certificate life (default: the profile's)")
    s.add_argument("--lifetimes", default=os.environ.get("HISTO_LIFETIMES", "standard"),
                   help="standard, or compressed: every credential's life in minutes (lifetimes.py)")
    s.add_argument("--vault-nodes", type=int, choices=(1, 3), default=1,
                   help="3: an OpenBao raft cluster with the static seal, as the default profile deploys")
    s.add_argument("--readmit", default=None, metavar="HOST",
                   help="give this quarantined host its identity back (policy, PKI role); others stay contained")
    s.set_defaults(fn=cmd_local)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # everything a histo process writes (keys, logs, state) is private by default
    _setup_logging(args.log_level)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # one readable line, never a traceback for the user
        logging.getLogger("histo").debug("failure", exc_info=True)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"histo: {args.cmd}: {msg}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
