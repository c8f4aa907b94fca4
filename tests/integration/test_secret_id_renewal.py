"""AppRole secret_id renewal (vault/secretid.py) against a real OpenBao server with the lifetime
compressed to seconds: a service replaces its own secret_id before it expires and keeps logging in
after the first one's expiry; what the renewal right allows nobody else is refused beside it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from hvac import exceptions as hx

from histo.vault.client import VaultAuthError, VaultUnavailable
from histo.local.bao import BaoServer
from histo.vault.secretid import SecretIdInfo, SecretIdKeeper

from .test_secret_zero import _until
from .vaultfix import configure, default_hosts, provisioned_service, running_bao, service_vault

pytestmark = pytest.mark.long

HOSTS = {h["name"]: h for h in default_hosts()}
SECRET_ID_TTL = 12  # seconds: renewed once 8 s are spent


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BaoServer, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("secret-id-renewal")
    with running_bao(root / "vault") as bao:
        result = configure(bao, secret_id_ttl=f"{SECRET_ID_TTL}s")
        yield bao, result["role_ids"], root


Vault = tuple[BaoServer, dict[str, str], Path]


def _info(keeper: SecretIdKeeper) -> SecretIdInfo:
    assert keeper.info is not None
    return keeper.info


def test_renews_before_expiry_and_outlives_the_first_secret_id(vault: Vault) -> None:
    bao, role_ids, root = vault
    creds = root / "worker1"
    sv = provisioned_service(bao, role_ids, HOSTS["worker1"], creds)
    keeper = SecretIdKeeper(sv)
    first = (creds / "secret_id").read_text().strip()
    assert keeper.renew_if_needed() is False  # young: nothing to do
    first_accessor = _info(keeper).accessor
    # three lifetimes of the first secret_id, checked every half second like the service's loop
    deadline = time.monotonic() + 3 * SECRET_ID_TTL
    while time.monotonic() < deadline:
        keeper.renew_if_needed()
        time.sleep(0.5)
    assert keeper.renewals >= 3, keeper.renewals
    stored = (creds / "secret_id").read_text().strip()
    assert stored != first and (creds / "secret_id").stat().st_mode & 0o777 == 0o600
    # the service restarted now logs in with the renewed secret_id; the first is gone (destroyed)
    fresh = service_vault(bao, HOSTS["worker1"], creds)
    fresh.login()
    assert fresh.zk_credentials()[0] == "histo-worker"
    with pytest.raises(VaultAuthError):
        keeper.lookup(first)
    assert _info(keeper).accessor != first_accessor
    assert _info(keeper).expires - time.time() > SECRET_ID_TTL / 3 - 2  # the margin is kept


def test_renewal_right_is_for_its_own_role_only_and_keeps_the_address_binding(vault: Vault) -> None:
    bao, role_ids, root = vault
    sv = provisioned_service(bao, role_ids, HOSTS["worker1"], root / "worker1-attack")
    own = "auth/approle/role/histo-worker1/secret-id"
    # attack: mint a secret_id for another host (worker2, master1) with worker1's token
    for other in ("worker2", "master1"):
        with pytest.raises(hx.Forbidden):
            sv.client.write_data(f"auth/approle/role/histo-{other}/secret-id")
    # attack: widen or shape its own: another address, metadata, a longer or unlimited life
    for params in ({"cidr_list": "127.0.0.0/8"}, {"token_bound_cidrs": "127.0.0.0/8"},
                   {"metadata": '{"x":"y"}'}, {"ttl": "87600h"}, {"num_uses": 0}):
        with pytest.raises(hx.Forbidden):
            sv.client.write_data(own, data=params)
    # attack: look up or destroy another host's secret_ids
    with pytest.raises(hx.Forbidden):
        sv.client.write_data("auth/approle/role/histo-worker2/secret-id-accessor/destroy",
                             data={"secret_id_accessor": "x"})
    # legitimate: a plain mint of its own, which carries the role's address binding
    resp: Any = sv.client.write_data(own)
    minted = resp["data"]["secret_id"]
    looked: Any = sv.client.write_data(f"{own}/lookup", data={"secret_id": minted})
    assert 0 < looked["data"]["secret_id_ttl"] <= SECRET_ID_TTL
    stolen_dir = root / "stolen"
    stolen_dir.mkdir(mode=0o700)
    (stolen_dir / "role_id").write_text(role_ids["worker1"] + "\n")
    (stolen_dir / "secret_id").write_text(minted + "\n")
    with pytest.raises(VaultAuthError, match="CIDR"):
        service_vault(bao, HOSTS["worker1"], stolen_dir, source=HOSTS["worker2"]["address"]).login()
    service_vault(bao, HOSTS["worker1"], stolen_dir).login()  # from worker1's own address it works


def test_renewal_waits_out_vault_being_away(vault: Vault) -> None:
    """Sealed at the renewal moment: VaultUnavailable, the stored secret_id untouched; renewed once
    Vault is back, within the margin."""
    bao, role_ids, root = vault
    creds = root / "worker2"
    sv = provisioned_service(bao, role_ids, HOSTS["worker2"], creds)
    keeper = SecretIdKeeper(sv)
    keeper.renew_if_needed()
    before = (creds / "secret_id").read_text()
    bao.seal()
    try:
        with pytest.raises(VaultUnavailable):
            keeper.renew_if_needed(now=_info(keeper).expires - 1)
        assert (creds / "secret_id").read_text() == before
    finally:
        bao.unseal()
    assert _until(lambda: keeper.renew_if_needed(), 10)
    assert (creds / "secret_id").read_text() != before
