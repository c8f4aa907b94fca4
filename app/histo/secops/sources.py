"""What each layer's refusal looks like, turned into one attributed SecOps event: the layer, what was
refused, and who — the inventory host and its SPIFFE id, resolved from the AppRole (Vault) or the
source address (a refused AppRole login or wrapping token, firewall, sshd, ZooKeeper), never
left as a bare address when the inventory knows it.

classify() takes an event as the collector stored it (a JSON object, or {"msg": ..., "host": ...,
"tag": ...} from rsyslog) and returns the attribution, or None for a line that is no refusal."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..edge.events import DEFAULT_SEVERITY
from ..tls.identity import spiffe_id

_KV = re.compile(r"\b([A-Z]+)=(\S*)")
_SSHD = re.compile(r"(?:Failed (?:password|publickey|none) for (?:invalid user )?(?P<u1>\S+)|"
                   r"Invalid user (?P<u2>\S*)|Connection closed by authenticating user (?P<u3>\S+)|"
                   r"Disconnected from invalid user (?P<u4>\S+)) (?:from )?(?P<ip>[0-9a-f.:]+)")
# ZooKeeper 3.8.0's refusals file (histo.zk.config), as the shipper's zookeeper_refusals filter keeps it.
# Fields of an audit line are tab-separated (rsyslog may have escaped the tab as #011).
_IP = re.compile(r"(?:/)?([0-9]{1,3}(?:\.[0-9]{1,3}){3})")
_ZK_AUDIT = re.compile(r"(?:^|\t|#011|\s)(session|user|ip|operation|znode|result)=(.*?)(?=\t|#011|\s*$)")
_ZK_HEAD = re.compile(r"session=0x[0-9a-fA-F]+(?:[ \t]|#011)user=(?P<user>[A-Za-z0-9.,=_@-]*)(?:[ \t]|#011)"
                      r"ip=(?P<ip>[0-9a-fA-F.:]+)(?:[ \t]|#011)operation=(?P<operation>[A-Za-z]+)(?P<rest>.*)$", re.S)
_ZK_CN = re.compile(r"CN=([A-Za-z0-9-]+)\.")
_ZK_HEAD_FIELD = re.compile(r"(?:[ \t]|#011)(?:user|ip|operation)=")
_ZK_LINE = re.compile(r"^\S+ (?P<level>[A-Z]+) \[(?P<thread>[^\]]*)\] (?P<logger>\S+): (?P<text>.*)$")
# A refused handshake: "Exception caught <exception>: <reason>", then (joined by the shipper, same thread)
# "Closing  /<address>:<port>[0](queued=0,recved=0,sent=0)", the only line where ZooKeeper names the client.
_ZK_CLOSING = re.compile(r"\[(?P<thread>[^\]]*)\] NettyServerCnxnFactory: Closing +/(?P<ip>[0-9a-fA-F.:]+?):\d+\[")
_ZK_TLS_REASONS = (("Empty client certificate chain", "no client certificate"),
                   ("PKIX path building failed", "a certificate from another CA"),
                   ("validity check failed", "a certificate out of its validity (expired or not yet valid)"),
                   ("NotSslRecordException", "not TLS (plaintext on the TLS port)"))

# A refused AppRole login's data.error (OpenBao 2.7.2 builtin/credential/approle path_login.go): the
# reasons kept as they are, and the CIDR refusals (the quoted value is the request's source address)
APPROLE_MOUNT = "approle"
_LOGIN_REASONS = ("invalid role or secret ID", "missing role_id", "missing secret_id")
_CIDR_REFUSED = re.compile(r'source address "(?P<ip>[0-9a-fA-F.:]{2,45})" unauthorized (?:through|by) CIDR '
                           r"restrictions on the (?P<what>secret ID|role)(?::.*)?", re.S)


@dataclass(frozen=True)
class Host:
    name: str
    role: str  # the SPIFFE role: master | worker | zookeeper | secops | vault


class Inventory:
    """Addresses and AppRoles -> hosts, from the hosts list of the Vault spec (name, role, address)."""

    def __init__(self, hosts: Sequence[Mapping[str, Any]], ports: Mapping[str, int] | None = None) -> None:
        self.by_address = {str(h["address"]): Host(str(h["name"]), str(h["role"])) for h in hosts}
        self.by_name = {h.name: h for h in self.by_address.values()}
        self.port_names = {int(v): k for k, v in (ports or {}).items()}

    def who(self, host: Host | None, address: str | None = None) -> dict[str, Any]:
        if host is None:
            return {"host": "outside", "spiffe": None, "address": address}
        return {"host": host.name, "spiffe": spiffe_id(host.role, host.name), "address": address}


def _login_refusal(ev: Mapping[str, Any]) -> str | None:
    """Why OpenBao refused an AppRole login, from the response's data.error (in clear once vault-setup
    tuned the mount: audit_non_hmac_response_keys; else the entry's own `error`, when it has one), or
    None for an entry that is no refused login. A login refused for a source address outside the
    secret_id's CIDR binding has no top-level `error` at all: this is the only place that says it was
    refused. The reason is kept only in the shapes known (the one quoted value kept is an address);
    anything else says only that it was refused, never what it quoted."""
    req = ev.get("request") or {}
    data = (ev.get("response") or {}).get("data") or {}
    if not str(req.get("path", "")).startswith(f"auth/{APPROLE_MOUNT}/login") or not isinstance(data, dict):
        return None
    error = data.get("error")
    if not isinstance(error, str) or not error:
        return None
    if error.startswith("hmac-sha256:"):  # a mount vault-setup has not tuned yet: the reason is hidden
        return str(ev.get("error") or "login refused (the reason is HMAC'd: vault-setup tunes the approle mount)")
    m = _CIDR_REFUSED.fullmatch(error)
    if m:
        return f"source address {m.group('ip')} unauthorized by the CIDR restrictions on the {m.group('what')}"
    if error in _LOGIN_REASONS:
        return error
    return "login refused (an unexpected reason, not shown: read it on the Vault node)"


def _wrapping_refused(ev: Mapping[str, Any], inv: Inventory) -> dict[str, Any] | None:
    """A wrapping token OpenBao refused (used already, expired, never issued): it answers before any
    response is audited, so the audit device has only a request entry, with the error and the address
    of whoever presented it (the token HMAC'd). The presenter is known by that address alone."""
    req = ev.get("request") or {}
    path = str(req.get("path", ""))
    if not path.startswith("sys/wrapping/") or not isinstance(ev.get("error"), str):
        return None
    addr = str(req.get("remote_address") or "") or None
    why = str(ev["error"])
    known = "wrapping token is not valid or does not exist" in why
    return {"layer": "vault", "kind": "vault_wrapping_refused", "severity": "warning",
            **inv.who(inv.by_address.get(addr) if addr else None, addr), "by": "address",
            "path": path[:100], "operation": str(req.get("operation", ""))[:20],
            "why": ("a wrapping token used already, expired or never issued: " if known else "") + why[:150]}


def _vault(ev: Mapping[str, Any], inv: Inventory) -> dict[str, Any] | None:
    if ev.get("type") == "request" and ev.get("error"):  # refused before any response was audited
        return _wrapping_refused(ev, inv)
    login = _login_refusal(ev) if ev.get("type") == "response" else None
    if ev.get("type") != "response" or not (ev.get("error") or login):
        return None
    req, auth = ev.get("request") or {}, ev.get("auth") or {}
    role_name = str((auth.get("metadata") or {}).get("role_name") or "")
    addr = str(req.get("remote_address") or "") or None
    host = inv.by_name.get(role_name.removeprefix("histo-")) if role_name.startswith("histo-") else None
    # how the identity is known: by the AppRole of the token Vault refused (a secret only that machine
    # holds), or only by the address the request came from (which a root machine on the same network
    # segment can borrow): rules contain on the first, alert on the second
    by = "approle" if host is not None else "address"
    host = host or (inv.by_address.get(addr) if addr else None)
    return {"layer": "vault", "kind": "vault_denied", "severity": "warning", **inv.who(host, addr), "by": by,
            "path": str(req.get("path", "")), "operation": str(req.get("operation", "")),
            "why": (login or str(ev["error"]))[:200]}


def _firewall(msg: str, at: str, inv: Inventory) -> dict[str, Any] | None:
    if "histo-drop:" not in msg:
        return None
    f = dict(_KV.findall(msg))
    src, dst, port = f.get("SRC"), f.get("DST"), f.get("DPT")
    if src == "0.0.0.0":  # a DHCP request broadcast by a booting machine (the firewall no longer logs it)
        return None
    target = inv.by_address.get(dst or "") or inv.by_name.get(at)
    name = inv.port_names.get(int(port)) if port and port.isdigit() else None
    src_host = inv.by_address.get(src or "")
    return {"layer": "firewall", "kind": "firewall_drop", "severity": "warning", **inv.who(src_host, src),
            "target": target.name if target else dst, "port": int(port) if port and port.isdigit() else None,
            "proto": f.get("PROTO"),
            "why": f"the segmentation matrix allows no {src_host.role if src_host else 'outside'} -> "
                   f"{target.role if target else 'this machine'}:{name or port or f.get('PROTO', '?')}"}


def _sshd(msg: str, at: str, inv: Inventory) -> dict[str, Any] | None:
    m = _SSHD.search(msg)
    if not m:
        return None
    user = next((u for u in m.group("u1", "u2", "u3", "u4") if u is not None), "")
    addr = m.group("ip")
    return {"layer": "ssh", "kind": "ssh_refused", "severity": "warning", **inv.who(inv.by_address.get(addr), addr),
            "target": at, "user": user[:64]}


def _zk_who(inv: Inventory, addr: str | None) -> dict[str, Any]:
    if addr is None:  # ZooKeeper named no client: the refusal is known, the refused is not
        return {"host": "unknown", "spiffe": None, "address": None}
    return inv.who(inv.by_address.get(addr), addr)


def _zk_audit_fields(text: str) -> dict[str, str]:
    """An audit line's fields, each as it first appears (a path may hold a literal "#011user=...", what
    rsyslog's escaped tab looks like). Trusted only past the strict head (_zk_audit)."""
    fields: dict[str, str] = {}
    for key, value in _ZK_AUDIT.findall(text):
        fields.setdefault(key, value.strip())
    return fields


@dataclass(frozen=True)
class ZkAudit:
    """A failed write's audit line, read as the machines' shipper reads it
    (roles/logship/templates/filter-zookeeper_refusals.j2)."""
    ids: list[str]  # the session's ids: its certificate's subject, digest names as claimed, its address
    ip: str | None
    operation: str | None
    znode: str
    strict: bool  # the head was read strictly: the ip and the operation are ZooKeeper's own
    names: list[str]  # every certificate name (CN=<host>.) the line spells, sorted
    from_its_host: bool  # one certificate, and the session came from that host's own address (strict only)

    @property
    def certificate(self) -> str | None:
        """The host whose certificate the session presented: the line's one certificate name (every
        session presents one, so a second is text the client wrote, and then neither counts)."""
        return self.names[0] if len(self.names) == 1 else None


def _zk_audit(text: str, inv: Inventory) -> ZkAudit:
    """ZooKeeper writes session, user, ip and operation first, then the znode. A digest name is the
    client's own text (anything but ':') and so is a path: either may spell out a head of its own
    ("#011ip=...#011operation=..." is what rsyslog makes of ZooKeeper's tabs). So the head is read
    strictly — a user field of what our ids are made of, and user, ip and operation named once each in
    the line — or its ip and operation are only the first ones the line spells (not ZooKeeper's own for
    sure). Every session presents a certificate of our CA (CN=<host>.<domain>): its name is always in the
    line, so a line naming one host's CN= is that host's certificate, and a line naming several (a digest
    identity called "CN=master1.histo.internal", a path that spells one) binds nobody."""
    names = sorted(set(_ZK_CN.findall(text)))
    head = _ZK_HEAD.match(text.strip())
    if head is None or len(_ZK_HEAD_FIELD.findall(text)) != 3:
        f = _zk_audit_fields(text)
        return ZkAudit([u for u in f.get("user", "").split(",") if u], f.get("ip") or None, f.get("operation"),
                       f.get("znode", ""), strict=False, names=names, from_its_host=False)
    ids = [u for u in head.group("user").split(",") if u]
    ip = head.group("ip")
    znode = next((v.strip() for k, v in _ZK_AUDIT.findall(head.group("rest")) if k == "znode"), "")
    at_ip = inv.by_address.get(ip)
    return ZkAudit(ids, ip, head.group("operation"), znode, strict=True, names=names,
                   from_its_host=len(names) == 1 and at_ip is not None and at_ip.name == names[0])


def _audit_text(line: str) -> str:
    """The message of an audit line (after ZooKeeper's own prefix: time, level, thread, logger)."""
    head = _ZK_LINE.match(line.strip())
    return head.group("text") if head else line


def ordinary_zk_failure(msg: str, inv: Inventory) -> bool:
    """A failed ZooKeeper write that is ordinary traffic, decided as the machines' shipper decides
    (roles/logship/templates/filter-zookeeper_refusals.j2) — ZooKeeper's audit line says a write failed,
    not why (NoAuth reads like NodeExists or BadVersion), so who wrote decides: a master (its certificate
    from its address, and the histo-master digest user) anywhere but /zookeeper/config, a worker in its
    own member slot. On the machines such lines never leave ZooKeeper's host; a replay of the raw file
    (replay.py) drops them here."""
    lines = re.split(r"\\n|#012|\n", msg)
    if "Slf4jAuditLogger" not in lines[0] or "result=failure" not in lines[0]:
        return False
    audit = _zk_audit(_audit_text(lines[0]), inv)
    if not audit.from_its_host:  # read strictly, one certificate, from that host's address (an inventory host)
        return False
    host = inv.by_name[str(audit.certificate)]
    if host.role == "master" and "histo-master" in audit.ids and audit.znode != "/zookeeper/config":
        return True
    return audit.znode.startswith(f"/histo/workers/{host.name}/")


def _zookeeper(msg: str, at: str, inv: Inventory) -> dict[str, Any] | None:
    """ZooKeeper's refusals (real lines: tests/unit/test_secops_sources.py). A failed write reaches the
    collector only when its writer had no right to try it (the shipper's filter decides: ZooKeeper's
    audit line does not say why a write failed), so every audit failure here is an ACL refusal."""
    lines = re.split(r"\\n|#012|\n", msg)
    head = _ZK_LINE.match(lines[0].strip())
    text = head.group("text") if head else msg
    if "Slf4jAuditLogger" in lines[0] and "result=failure" in text:
        audit = _zk_audit(text, inv)
        addr = audit.ip
        # the session's certificate names the machine: bound to a key only that machine holds (rules
        # contain on it); else only the address it came from, which a root neighbour can borrow, or which
        # a client wrote itself into a user field it made odd (alert)
        bound = inv.by_name.get(audit.certificate) if audit.certificate else None
        who = inv.who(bound, addr) if bound is not None else _zk_who(inv, addr)
        why = f"a {audit.operation or 'write'} on {audit.znode or '?'} that this identity may not make"
        if len(audit.names) > 1:
            why += f"; the line names several certificates ({', '.join(audit.names[:4])}): all but one are its own text"
        if not audit.strict:
            why += "; it spells out a head of its own: its address may be its own text"
        return {"layer": "zookeeper", "kind": "zk_acl_denied", "severity": "critical", **who,
                "by": "certificate" if bound is not None else "address",
                "target": at, "operation": audit.operation, "znode": audit.znode or None,
                "certificate": audit.certificate,  # the x509 identity ZooKeeper saw (the line's one CN= name)
                # digest user names as the client claimed them: a wrong password still shows the name
                "claimed": [u for u in audit.ids if not u.startswith("CN=") and u != addr][:8],
                "why": why[:300]}
    if "Exception caught" in text and ("javax.net.ssl." in text or "NotSslRecordException" in text):
        reason = text.rsplit("Exception: ", 1)[-1].strip()[:200]
        closing = next((m for m in map(_ZK_CLOSING.search, lines[1:]) if m), None)
        # the address counts only from the same thread (the same connection), never a neighbour's
        addr = closing.group("ip") if closing and head and closing.group("thread") == head.group("thread") else None
        what = next((w for k, w in _ZK_TLS_REASONS if k in text), "refused")
        return {"layer": "zookeeper", "kind": "zk_tls_refused", "severity": "warning", **_zk_who(inv, addr),
                "target": at, "why": f"TLS handshake refused: {what} ({reason})"}
    if "No authentication provider for scheme" in text or "Authentication failed for" in text:
        return {"layer": "zookeeper", "kind": "zk_auth_failed", "severity": "warning", **_zk_who(inv, None),
                "target": at, "why": text.strip()[:200]}
    return None


LOCAL_SENDERS = ("127.0.0.1", "::1", "")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_ADDR_FIELDS = ("peer", "where", "remote", "client")  # where a service's event names the party it refused
_NAME_FIELDS = ("peer", "worker")  # ... or names it by host


def _service(msg: str, at: str, sender: Host | None, trusted: bool, inv: Inventory) -> dict[str, Any] | None:
    """A master's or worker's own security event (edge/events.py EventFile, one JSON line): it
    happened on the machine that sent it; the identity refused is the party the event names by
    address (an mTLS peer, an HTTP client), resolved through the inventory, or a user (`who`)."""
    if not trusted and (sender is None or sender.role not in ("master", "worker")):
        return {"layer": "secops", "kind": "forged_source", "severity": "critical", **inv.who(sender),
                "why": "a service event sent by a machine that runs no histo service"}
    try:
        ev = json.loads(msg)
    except ValueError:
        return None
    if not isinstance(ev, dict) or not _KIND.fullmatch(str(ev.get("kind", ""))):
        return None
    severity = str(ev.get("severity") or DEFAULT_SEVERITY.get(str(ev["kind"]), "info"))
    if severity not in ("warning", "critical"):
        return None
    addr = next((m.group(1) for f in _ADDR_FIELDS if isinstance(ev.get(f), str)
                 for m in [_IP.search(str(ev[f]))] if m), None)
    # no address: the party may be named by its certificate's host name (a peer, or the worker whose
    # task result the leader refused: result_refused names it so, checked by mTLS)
    refused = inv.by_address.get(addr) if addr else next(
        (inv.by_name[ev[f]] for f in _NAME_FIELDS if isinstance(ev.get(f), str) and ev[f] in inv.by_name), None)
    out: dict[str, Any] = {"layer": "service", "kind": str(ev["kind"]), "severity": severity,
                           **inv.who(refused, addr), "target": at}
    for key in ("reason", "path", "who", "role", "scope", "listener"):
        if isinstance(ev.get(key), (str, int)):
            out[key] = str(ev[key])[:200]
    if out["kind"] == "tls_handshake_refused":
        # a certificate refused before any request (edge/conncap.py): OpenSSL's reason, on which
        # listener, and how many more from the address the service did not report (its rate limit)
        more = ev.get("suppressed")
        more = more if isinstance(more, int) and not isinstance(more, bool) and more > 0 else 0
        out["suppressed"] = more
        out["why"] = (f"TLS handshake refused on the {out.get('listener', '?')} listener: "
                      f"{out.get('reason', '?')}" + (f" (and {more} more not reported)" if more else ""))[:300]
    return out


def classify(event: Mapping[str, Any], inv: Inventory, self_host: str | None = None) -> dict[str, Any] | None:
    """What a refusal was and whom it concerns. With `from` (the sending address, rsyslog's fromhost-ip
    on the collector) the machine an event happened on is the one that sent it, never the name the
    message declares, and a Vault audit entry counts only from a Vault node (or the collector's own
    files): a shipper that sends one in another's name is itself the finding."""
    msg, at, tag = str(event.get("msg", "")), str(event.get("host", "")), str(event.get("tag", ""))
    sent_from = event.get("from")
    sender: Host | None = None
    if sent_from is not None:
        sent_from = str(sent_from)
        local = sent_from in LOCAL_SENDERS
        sender = inv.by_name.get(self_host or "") if local else inv.by_address.get(sent_from)
        at = sender.name if sender else sent_from
        event = {k: v for k, v in event.items() if k != "from"}
        if tag.startswith("histo-events"):
            return _service(msg, at, sender, local, inv)
        audit_json = ("type" in event and "request" in event) or msg.lstrip().startswith("{")
        if audit_json and not (local or (sender is not None and sender.role == "vault"
                                         and tag.startswith("vault-audit"))):
            return {"layer": "secops", "kind": "forged_source", "severity": "critical", **inv.who(sender, sent_from),
                    "why": "a Vault audit entry sent by a machine that is no Vault node"}
        if tag.startswith("zookeeper") and not (local or (sender is not None and sender.role == "zookeeper")):
            return {"layer": "secops", "kind": "forged_source", "severity": "critical", **inv.who(sender, sent_from),
                    "why": "a ZooKeeper line sent by a machine that is no ZooKeeper server"}
    if "type" in event and "request" in event:  # already a Vault audit entry
        return _vault(event, inv)
    if msg.lstrip().startswith("{"):  # a JSON line shipped inside a syslog message (Vault's audit file)
        try:
            inner = json.loads(msg)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            return classify({**inner, "host": at}, inv)
    if tag.startswith("vault-audit"):  # not one whole entry: a piece of one longer than the shipper's limit
        return {"layer": "vault", "kind": "vault_audit_unparsed", "severity": "warning",
                **inv.who(sender, sent_from), "why": "an audit entry too long or cut: read it on the node"}
    if "histo-drop:" in msg:
        return _firewall(msg, at, inv)
    if tag.startswith("sshd") or "sshd" in msg[:40]:
        return _sshd(msg, at, inv)
    if tag.startswith("zookeeper"):
        return _zookeeper(msg, at, inv)
    kind = str(event.get("kind", ""))
    if kind in DEFAULT_SEVERITY and DEFAULT_SEVERITY[kind] != "info":  # the services' own events
        host = inv.by_name.get(str(event.get("service_host") or event.get("host") or ""))
        return {"layer": "service", "kind": kind, "severity": DEFAULT_SEVERITY[kind], **inv.who(host)}
    return None
