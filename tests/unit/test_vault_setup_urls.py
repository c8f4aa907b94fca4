"""vault/setup.py's PKI issuing and CRL URLs name every Vault node the setup was given, not the one its
client happens to talk to: a failover client moves between raft nodes, and a second apply through
another node (the provisioner's run after an election) must not see the URLs as drift."""
from __future__ import annotations

from histo.vault import setup
from histo.vault.failover import failover_client

A, B, C = "https://10.0.0.1:8200", "https://10.0.0.2:8200", "https://10.0.0.3:8200"


def test_every_node_of_the_client_whichever_answers() -> None:
    client = failover_client(f"{A},{B},{C}", verify=False)
    first = setup._Applier(client, {"hosts": []}).base_urls
    client.adapter.base_uri = C  # as after a failover: the client now talks to C
    assert client.url == C
    assert setup._Applier(client, {"hosts": []}).base_urls == first == [A, B, C]


def test_the_spec_names_the_nodes() -> None:
    client = failover_client(B, verify=False)  # the setup talks to one node (a standby, say)
    applier = setup._Applier(client, {"hosts": [], "vault_url": f"{A}, {B}/,{C}"})
    assert applier.base_urls == [A, B, C]


def test_a_plain_client_is_its_one_node() -> None:
    import hvac

    assert setup._Applier(hvac.Client(url=A + "/", verify=False), {"hosts": []}).base_urls == [A]
