"""Every machine's firewall drops the quarantined hosts (secops/fence.py): which addresses, the nft
transaction, a list that cannot be read leaves the set alone; and, in a network namespace of this
test's own, the real nft: the set follows the list, and a packet from a quarantined address is
dropped even on an established connection while another address still gets through."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from typing import Any, Iterator

import pytest

from histo.secops.fence import Fence, NftSet, desired, script

HOSTS = [{"name": "vault1", "role": "vault", "address": "10.77.0.10"},
         {"name": "zk1", "role": "zookeeper", "address": "10.77.0.11"},
         {"name": "master1", "role": "master", "address": "10.77.0.21"},
         {"name": "worker1", "role": "worker", "address": "10.77.0.31"},
         {"name": "worker2", "role": "worker", "address": "10.77.0.32"}]


def test_desired_never_drops_this_machine_vault_or_zookeeper() -> None:
    assert desired({"worker1"}, HOSTS, "master1") == {"10.77.0.31"}
    assert desired({"worker1"}, HOSTS, "worker1") == set()  # never itself
    assert desired({"vault1", "zk1", "nobody"}, HOSTS, "master1") == set()  # a forged record cuts nothing off
    assert script({"10.77.0.32", "10.77.0.31"}) == ("flush set inet histo quarantined\n"
                                                    "add element inet histo quarantined { 10.77.0.31, 10.77.0.32 }\n")
    assert script(set()) == "flush set inet histo quarantined\n"


class FakeNft:
    def __init__(self) -> None:
        self.elements: set[str] = set()
        self.scripts: list[str] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if "-j" in argv:
            elem = sorted(self.elements)
            found = {"name": "quarantined", **({"elem": elem} if elem else {})}
            body = {"nftables": [{"metainfo": {}}, {"set": found}]}
            return subprocess.CompletedProcess(argv, 0, json.dumps(body), "")
        self.scripts.append(kw["input"])
        self.elements = set()
        for line in kw["input"].splitlines():
            if line.startswith("add element"):
                self.elements = {a.strip() for a in line.split("{")[1].split("}")[0].split(",")}
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_the_set_follows_the_list_and_an_unreadable_list_changes_nothing() -> None:
    names: list[Any] = [{"worker1"}]

    def read() -> set[str]:
        if isinstance(names[0], Exception):
            raise names[0]
        return set(names[0])
    nft = FakeNft()
    fence = Fence(read, HOSTS, "master1", NftSet(run=nft))
    assert fence.sync() is True and nft.elements == {"10.77.0.31"}
    assert fence.sync() is False and len(nft.scripts) == 1  # unchanged: no transaction
    nft.elements = set()  # the ruleset reloaded (flush ruleset): the next pass fills it again
    assert fence.sync() is True and nft.elements == {"10.77.0.31"}
    names[0] = ConnectionError("Vault away")
    assert fence.sync() is False and nft.elements == {"10.77.0.31"} and "unavailable" in fence.error
    names[0] = set()  # released
    assert fence.sync() is True and nft.elements == set()


# -- the real nft, in a namespace this test makes and removes ------------------------------------------
RULESET = """table inet histo {
  set quarantined {
    type ipv4_addr
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr @quarantined drop
    ct state established,related accept
  }
}
"""


def _sh(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=check, **kw)


@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("nft and ip (iproute2) are needed: scripts/bootstrap.sh installs them")
    ns = f"histo-fence-{uuid.uuid4().hex[:6]}"
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        # two addresses of the namespace's own loopback: one to be quarantined, one legitimate peer
        _sh("ip", "-n", ns, "addr", "add", "10.77.0.31/32", "dev", "lo")
        _sh("ip", "-n", ns, "addr", "add", "10.77.0.32/32", "dev", "lo")
        _sh("ip", "-n", ns, "addr", "add", "10.77.0.21/32", "dev", "lo")
        _sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=RULESET)
        yield ns
    finally:
        _sh("ip", "netns", "del", ns, check=False)


CONNECT = """
import socket, sys
srv = socket.socket(); srv.bind(("10.77.0.21", 0)); srv.listen(4); port = srv.getsockname()[1]
def pair(src):
    c = socket.create_connection(("10.77.0.21", port), timeout=2, source_address=(src, 0))
    s, _ = srv.accept(); s.settimeout(2); return c, s
def passes(c, s):
    try:
        c.sendall(b"x"); return s.recv(1) == b"x"
    except OSError:
        return False
w1, s1 = pair("10.77.0.31"); w2, s2 = pair("10.77.0.32")
print(passes(w1, s1), passes(w2, s2)); sys.stdout.flush()
sys.stdin.readline()  # the set changes now
print(passes(w1, s1), passes(w2, s2))
"""


def test_real_nft_drops_a_quarantined_address_on_an_established_connection(netns: str) -> None:
    nft = NftSet(["ip", "netns", "exec", netns, "nft"])
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", CONNECT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().split() == ["True", "True"]  # both connections established, working
        fence = Fence(lambda: {"worker1"}, HOSTS, "master1", nft)
        assert fence.sync() is True and nft.current() == {"10.77.0.31"}
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["False", "True"]  # worker1 cut off, worker2 still served
    finally:
        proc.kill()
        proc.wait()
    released = Fence(lambda: set(), HOSTS, "master1", nft)
    assert released.sync() is True and nft.current() == set()
