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
    import hvac
    client = hvac.Client(url=url, verify=ca)
    if token_file:
        client.token = _read_secret_file(token_file)
    return client


def cmd_master(a) -> None:
    from .config import ServiceConfig
    from .master.service import run
    run(ServiceConfig.load(a.config))


def cmd_worker(a) -> None:
    import asyncio
    from .config import ServiceConfig
    from .worker.service import Worker
    asyncio.run(Worker(ServiceConfig.load(a.config)).serve())


def cmd_vault_setup(a) -> None:
    from .vault.setup import apply
    spec = json.loads(Path(a.spec).read_text())
    out = apply(_vault_client(a.vault_url, a.vault_ca, a.token_file), spec)
    print(json.dumps(out, sort_keys=True))


def cmd_provision(a) -> None:
    from .vault.provision import wrapped_secret_id, write_credentials
    client = _vault_client(a.vault_url, a.vault_ca, a.token_file)
    role_id = client.auth.approle.read_role_id(f"histo-{a.host}")["data"]["role_id"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_credentials(out, role_id, wrapped_secret_id(client, a.host, a.address, a.wrap_ttl))
    print(json.dumps({"host": a.host, "out": str(out)}))


def cmd_vault_tls(a) -> None:
    from .tls.selfsigned import ensure_bootstrap_tls
    before = {p.name: p.read_bytes() for p in Path(a.dir).glob("*.pem")} if Path(a.dir).exists() else {}
    ensure_bootstrap_tls(Path(a.dir), a.hostname, a.address)
    after = {p.name: p.read_bytes() for p in Path(a.dir).glob("*.pem")}
    print(json.dumps({"changed": before != after, "dir": a.dir}))


def cmd_zk_prepare(a) -> None:
    from .zk.prepare import prepare
    prepare(Path(a.config))


def cmd_zk_exec(a) -> None:
    from .zk.config import exec_server
    exec_server(Path(a.config))


def cmd_token_issue(a) -> None:
    from .edge.tokens import issue_token, parse_ttl
    client = _vault_client(a.vault_url, a.vault_ca, a.token_file)
    print(issue_token(client, role=a.role, subject=a.subject, ttl_seconds=parse_ttl(a.ttl)))


def cmd_local(a) -> None:
    from .local import cluster
    root = Path(a.state or ".histo/local")
    if a.action == "up":
        cluster.up(root, masters=a.masters, workers=a.workers, cert_ttl=a.cert_ttl)
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

    def vault_args(s):
        s.add_argument("--vault-url", default=os.environ.get("VAULT_ADDR", "https://127.0.10.10:8200"))
        s.add_argument("--vault-ca", default=os.environ.get("VAULT_CACERT", ".histo/local/vault/tls/ca.pem"))
        s.add_argument("--token-file", required=True, help="file holding a Vault token (never on the command line)")

    s = sub.add_parser("vault-tls", help="bootstrap CA and listener certificate for Vault itself (idempotent)")
    s.add_argument("--dir", required=True)
    s.add_argument("--hostname", action="append", required=True)
    s.add_argument("--address", action="append", default=[])
    s.set_defaults(fn=cmd_vault_tls)

    s = sub.add_parser("vault-setup")
    s.add_argument("--spec", required=True)
    vault_args(s)
    s.set_defaults(fn=cmd_vault_setup)

    s = sub.add_parser("provision")
    s.add_argument("--host", required=True)
    s.add_argument("--address", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--wrap-ttl", default="300s")
    vault_args(s)
    s.set_defaults(fn=cmd_provision)

    tok = sub.add_parser("token").add_subparsers(dest="tcmd", required=True)
    s = tok.add_parser("issue")
    s.add_argument("--role", required=True, choices=("uploader", "viewer", "admin"))
    s.add_argument("--subject", required=True)
    s.add_argument("--ttl", default="15m")
    vault_args(s)
    s.set_defaults(fn=cmd_token_issue)

    s = sub.add_parser("local")
    s.add_argument("action", choices=("up", "down", "status"))
    s.add_argument("--state", default=None)
    s.add_argument("--masters", type=int, default=2)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--cert-ttl", default="1h")
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
