"""ZooKeeper client checks for the zookeeper scenario's verify (run on the controller, config on stdin).
Prints one line per check; exits non-zero at the first check that does not hold."""
import json
import os
import socket
import ssl
import sys

import hvac
import requests
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.handlers.threading import KazooTimeoutError

from histo.zk.acl import ROOT, bootstrap_tree
from histo.zk.client import connect

cfg = json.load(sys.stdin)
# master1's certificate and the masters' digest credentials, from Vault with the scenario's root token (test
# only): read here from its git-ignored 0600 file, so the token is never an Ansible variable nor on stdin
session = requests.Session()
session.trust_env = False  # Vault is the scenario's own machine: never through a proxy from the environment
session.verify = cfg["vault_ca"]  # hvac takes a custom session's verify over its own argument
with open(cfg["token_file"]) as fh:
    vault = hvac.Client(url=cfg["vault"], token=fh.read().strip(), verify=cfg["vault_ca"], session=session)
client = cfg["client"]
issued = vault.write_data(f"pki_int/issue/host-{client['name']}", data={
    "common_name": f"{client['name']}.histo.internal", "ip_sans": client["address"],
    "uri_sans": f"spiffe://histo.internal/master/{client['name']}", "ttl": "10m", "private_key_format": "pkcs8"})["data"]
cfg["cert"] = issued["certificate"] + "\n" + "\n".join(issued["ca_chain"])
cfg["key"] = issued["private_key"]
cfg["master"], cfg["acl_ids"] = (
    vault.secrets.kv.v2.read_secret_version(f"histo/zk/{name}", mount_point="secret",
                                            raise_on_deleted_version=True)["data"]["data"]
    for name in ("master", "acl-ids"))
addr, port = cfg["address"], cfg["port"]
hosts = f"{addr}:{port}"
os.makedirs(cfg["dir"], mode=0o700, exist_ok=True)
cert, key = os.path.join(cfg["dir"], "client.pem"), os.path.join(cfg["dir"], "client.key")
for path, text in ((cert, cfg["cert"]), (key, cfg["key"])):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAILED ") + what)
    if not ok:
        sys.exit(1)


def tls_session(certfile=None, keyfile=None) -> bool:
    """True if the server completes a TLS handshake and answers a request (ruok) over it."""
    ctx = ssl.create_default_context(cafile=cfg["ca"])
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    try:
        with socket.create_connection((addr, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=addr) as s:
            s.sendall(b"ruok")
            return s.recv(4) == b"imok"
    except (ssl.SSLError, OSError):
        return False


try:
    socket.create_connection((addr, 2181), timeout=3).close()
    plain = True
except OSError:
    plain = False
check(not plain, "plain client port 2181 refuses connections")
check(tls_session(cert, key), "TLS port answers a client with a Vault-issued certificate")
check(not tls_session(), "TLS port refuses a client without a certificate")
check(not tls_session(cfg["foreign_cert"], cfg["foreign_key"]),
      "TLS port refuses a certificate from another CA (the Vault listener's bootstrap CA)")

anon = KazooClient(hosts=hosts, use_ssl=True, verify_certs=True, ca=cfg["ca"], timeout=3)
try:
    anon.start(timeout=5)
    got_session = True
    anon.stop()
except KazooTimeoutError:
    got_session = False
finally:
    anon.close()
check(not got_session, "a client without a certificate gets no session (so cannot write)")

master = connect(hosts, cfg["ca"], cert, key, cfg["master"]["username"], cfg["master"]["password"], "master",
                 acl_ids=cfg["acl_ids"], timeout=15)
try:
    bootstrap_tree(master, cfg["acl_ids"])
    master.create(f"{ROOT}/jobs/molecule-probe", b"x")
    master.delete(f"{ROOT}/jobs/molecule-probe")
    check(True, "the masters' digest identity creates and deletes under /histo (ACLs set as a master does)")
finally:
    master.stop()
    master.close()

nodigest = KazooClient(hosts=hosts, use_ssl=True, verify_certs=True, ca=cfg["ca"], certfile=cert, keyfile=key, timeout=6)
nodigest.start(timeout=15)
try:
    # ZooKeeper's own nodes too (world:anyone:cdrwa until a master's bootstrap_tree, above)
    for path in ("/molecule-probe", f"{ROOT}/jobs/molecule-probe", "/zookeeper/molecule-probe",
                 "/zookeeper/quota/molecule-probe"):
        try:
            nodigest.create(path, b"x")
            denied = False
            nodigest.delete(path)
        except NoAuthError:
            denied = True
        check(denied, f"a TLS client without digest credentials cannot write {path}")
finally:
    nodigest.stop()
    nodigest.close()
