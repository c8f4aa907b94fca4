"""The OpenBao server configuration, from the one template the `vault` role renders too
(`histo/vault/openbao.hcl.j2`; the role's template task points at the same file, with the same
variables, prefixed `hcl_`). Rendered here with
the settings Ansible's template module uses (trim_blocks, trailing newline kept, `to_json`), so both
produce the same text for the same values.

    render(node_id="vault1", data_dir="/var/lib/openbao", address="10.0.0.1", port=8200,
           tls_cert_file=".../cert.pem", tls_key_file=".../key.pem", audit_file=".../audit.log",
           retry_join=["https://10.0.0.2:8200"], tls_ca_file=".../ca.pem", seal_key_file=".../seal.key")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

TEMPLATE = Path(__file__).with_name("openbao.hcl.j2")


def render(*, node_id: str, data_dir: str | Path, address: str, port: int, tls_cert_file: str | Path,
           tls_key_file: str | Path, audit_file: str | Path | None = None, log_level: str | None = None,
           retry_join: Sequence[str] = (), tls_ca_file: str | Path | None = None,
           seal_key_file: str | Path | None = None) -> str:
    if retry_join and not tls_ca_file:
        raise ValueError("retry_join needs tls_ca_file: a peer's certificate is verified before joining")
    import jinja2  # local mode and tests only: the machines get this file from the role

    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=False)
    env.filters["to_json"] = json.dumps
    return env.from_string(TEMPLATE.read_text()).render(
        hcl_node_id=str(node_id), hcl_data_dir=str(data_dir), hcl_address=str(address), hcl_port=int(port),
        hcl_tls_cert_file=str(tls_cert_file), hcl_tls_key_file=str(tls_key_file),
        hcl_audit_file=str(audit_file) if audit_file else "", hcl_log_level=log_level or "",
        hcl_retry_join=list(retry_join), hcl_tls_ca_file=str(tls_ca_file or ""),
        hcl_seal_key_file=str(seal_key_file or ""))
