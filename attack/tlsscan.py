"""testssl.sh (the Debian package) against one TLS listener, and the verdict histo asks of it: TLS 1.2
and 1.3 only, only AEAD cipher suites (in TLS 1.2 too), no finding marked vulnerable, nothing of
severity MEDIUM or above but the findings named in NOT_APPLICABLE (each with its reason).

Standard library only: tests/integration (loopback, `make test` stage 1) and tests/deploy (the
machines, from the controller) both use it. testssl.sh 3.0 (Debian 12) has no client-certificate
option, so for a listener that requires one (the internal mTLS listeners) `scan` puts a two-line
`openssl` in front of the system's: every `openssl s_client` testssl starts presents the given
certificate and key, so the handshakes complete and the HTTP checks run. testssl's own socket
probes (a bare ClientHello) need no certificate: a server picks protocol and suite before it asks.

    python -m attack.tlsscan HOST:PORT [--ca CA] [--cert CERT --key KEY] [--openbao]   # prints the verdict
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTSSL = "testssl"  # /usr/bin/testssl of Debian's testssl.sh package
# The checks: protocols, cipher categories, forward secrecy, server preferences and defaults (chain),
# HTTP headers (HSTS), vulnerabilities, every cipher per protocol. Not the client simulations: they
# only say which of ~40 browsers would connect, and take a third of the time.
CHECKS = ("-p", "-s", "-f", "-P", "-S", "-h", "-U", "-E")
OFFERED = {"TLS1_2", "TLS1_3"}
NOT_OFFERED = {"SSLv2", "SSLv3", "TLS1", "TLS1_1"}
AEAD_MARKS = ("_GCM_", "CHACHA20_POLY1305", "_CCM")
# Findings testssl rates MEDIUM or worse that do not apply to histo, by id, with the reason.
NOT_APPLICABLE = {
    # histo's certificates are short-lived on purpose (default at most 24 h, renewed at 2/3 of their life,
    # DESIGN.md); testssl warns about anything that expires within 30 days.
    "cert_expirationStatus": "short-lived certificates by design, renewed at 2/3 of their life",
    "cert_notAfter": "short-lived certificates by design, renewed at 2/3 of their life",
}
# OpenBao's listener (local mode and the vault role alike).
VAULT_NOT_APPLICABLE = {
    "cert_revocation": "OpenBao's listener certificate comes from pki_vault, an intermediate of the bootstrap CA "
                       "(histo/tls/selfsigned.py, the fallback signed by the CA itself), a CA of its own that clients "
                       "pin (VAULT_CACERT) and that signs nothing else; it is renewed at 2/3 of its life "
                       "(vault/listener.py), never revoked, so it names no CRL or OCSP responder",
}
BAD_SEVERITIES = {"MEDIUM", "HIGH", "CRITICAL"}


@dataclass
class Scan:
    target: str
    findings: list[dict[str, Any]]
    seconds: float
    output: str = ""
    problems: list[str] = field(default_factory=list)

    def ciphers(self) -> list[str]:
        """The offered suites as 'TLSv1.x IANA_NAME'."""
        return [f"TLSv{f['finding'].split()[1]} {f['finding'].split()[-1]}" for f in _offered(self.findings)]


def _offered(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """-E lists each offered suite as id cipher-tls1_2_xc02c, "TLS 1.2  xc02c  <OpenSSL name> ... <IANA name>"."""
    return [f for f in findings if f["id"].startswith("cipher-tls")]


def judge(findings: list[dict[str, Any]], not_applicable: dict[str, str] | None = None) -> list[str]:
    """What is wrong with a listener, by testssl's findings (empty: nothing). `not_applicable`: more
    finding ids (with the reason) that do not apply to this listener."""
    skip = {**NOT_APPLICABLE, **(not_applicable or {})}
    by_id = {f["id"]: f for f in findings}
    problems = []
    for proto in sorted(OFFERED):
        if not by_id.get(proto, {}).get("finding", "").startswith("offered"):
            problems.append(f"{proto} not offered: {by_id.get(proto, {}).get('finding')}")
    for proto in sorted(NOT_OFFERED):
        if by_id.get(proto, {}).get("finding", "not offered") != "not offered":
            problems.append(f"{proto}: {by_id[proto]['finding']}")
    ciphers = _offered(findings)
    if not ciphers:
        problems.append("no cipher suite found offered (did the scan run?)")
    for f in ciphers:
        name = f["finding"].split()[-1]
        if not any(mark in name for mark in AEAD_MARKS):
            problems.append(f"not an AEAD suite: {f['finding']}")
    for f in findings:
        text = f["finding"].lower()
        vulnerable = "vulnerable" in text and "not vulnerable" not in text
        if f["id"] in skip and not vulnerable:
            continue
        if vulnerable or f["severity"] in BAD_SEVERITIES:
            problems.append(f"{f['id']} ({f['severity']}): {f['finding']}")
    return problems


def _openssl_with_cert(folder: Path, cert: str, key: str) -> Path:
    real = shutil.which("openssl") or "/usr/bin/openssl"
    wrapper = folder / "openssl"
    wrapper.write_text("#!/bin/sh\n"
                       f'if [ "$1" = s_client ]; then shift; exec {shlex.quote(real)} s_client '
                       f'-cert {shlex.quote(cert)} -key {shlex.quote(key)} "$@"; fi\n'
                       f'exec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o700)
    return wrapper


def scan(host: str, port: int, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
         not_applicable: dict[str, str] | None = None, netns_pid: int | None = None, timeout: float = 900) -> Scan:
    """testssl.sh against host:port (an IP address: no name is resolved); `ca` completes the chain of
    trust, `cert` and `key` are presented as the client certificate; `not_applicable` as for judge().
    `netns_pid`: run it (the controller's testssl, files and all) in that process's network namespace
    only (nsenter --net), so that it connects from a machine that may reach the port."""
    with tempfile.TemporaryDirectory(prefix="histo-testssl-") as tmp:
        folder = Path(tmp)
        report = folder / "findings.json"
        cmd = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", "--ip", host,
               "--connect-timeout", "10", "--openssl-timeout", "10", "--jsonfile", str(report), *CHECKS]
        if ca:
            cmd += ["--add-ca", ca]
        if cert and key:
            cmd += ["--openssl", str(_openssl_with_cert(folder, cert, key))]
        t0 = time.monotonic()
        # testssl writes its temporary files under TMPDIR: ours, removed with it
        prefix = ["nsenter", f"--target={netns_pid}", "--net", "--"] if netns_pid else []
        proc = subprocess.run([*prefix, *cmd, f"{host}:{port}"], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TMPDIR": tmp}, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - t0
        findings: list[dict[str, Any]] = json.loads(report.read_text()) if report.exists() else []
    result = Scan(f"{host}:{port}", findings, seconds, proc.stdout + proc.stderr)
    result.problems = (judge(findings, not_applicable) if findings
                       else [f"testssl produced no findings: {result.output[-2000:]}"])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attack.tlsscan", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="ADDRESS:PORT")
    p.add_argument("--ca", help="CA bundle that completes the server's chain")
    p.add_argument("--cert", help="client certificate (PEM) for a listener that requires one")
    p.add_argument("--key", help="its private key (PEM)")
    p.add_argument("--openbao", action="store_true", help="OpenBao's listener (VAULT_NOT_APPLICABLE applies)")
    p.add_argument("--json", help="write testssl's findings here too")
    a = p.parse_args(argv)
    host, _, port = a.target.rpartition(":")
    result = scan(host, int(port), ca=a.ca, cert=a.cert, key=a.key,
                  not_applicable=VAULT_NOT_APPLICABLE if a.openbao else None)
    if a.json:
        Path(a.json).write_text(json.dumps(result.findings, indent=1))
    print(f"testssl.sh {result.target} ({result.seconds:.0f} s): offers {', '.join(result.ciphers())}")
    for problem in result.problems:
        print(f"  PROBLEM {problem}")
    print("HELD" if not result.problems else "FAILED")
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
