"""`histo login / upload / jobs / get / verify` as a user runs them, against the real cluster: the
sign-in page's part is played by testing/signin.py (userpass + OpenBao's authorize API, what the
page calls), the loopback redirect is a real HTTP request to the CLI's listener."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from histo.testing.cluster import Cluster, sample_image
from histo.testing.signin import authorize, password_of, person_token

pytestmark = pytest.mark.long

HISTO = [sys.executable, "-m", "histo.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*HISTO, *args], capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_line_failure(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("histo: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _vault(cluster: Cluster) -> tuple[str, str]:
    cfg = cluster.config("master1")
    return cfg["vault_url"], cfg["vault_ca"]


def _login(cluster: Cluster, token_file: Path, name: str = "bob", forge_state: bool = False) -> \
        subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([*HISTO, "login", "--no-browser", "--url", cluster.url, "--ca", cluster.ca,
                             "--token-file", str(token_file), "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 30
        while not url.startswith("https://") and time.monotonic() < deadline:
            url = proc.stderr.readline().strip()
        assert "/ui/vault/identity/oidc/provider/histo/authorize?" in url, url
        vault, ca = _vault(cluster)
        token = person_token(vault, ca, name, password_of(cluster.root, name))
        status, answer = authorize(vault, ca, token, url)
        assert status == 200, answer
        redirect = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["redirect_uri"][0]
        assert redirect.startswith("http://127.0.0.1:")
        state = "forged" if forge_state else answer["state"]
        query = urllib.parse.urlencode({"code": answer["code"], "state": state})
        try:
            urllib.request.urlopen(f"{redirect}?{query}", timeout=10).read()
        except urllib.error.HTTPError:
            pass
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def signed_in(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    token_file = tmp_path_factory.mktemp("user") / "token.json"
    proc = _login(cluster, token_file)
    assert proc.returncode == 0, proc.stderr
    assert "signed in as bob (uploader)" in proc.stdout
    return token_file


def test_login_writes_a_private_token_file(signed_in: Path) -> None:
    assert signed_in.stat().st_mode & 0o777 == 0o600
    doc: dict[str, Any] = json.loads(signed_in.read_text())
    assert doc["sub"] == "bob" and doc["role"] == "uploader" and doc["access_token"].count(".") == 2


def test_login_refuses_a_redirect_with_another_state(cluster: Cluster, tmp_path: Path) -> None:
    proc = _login(cluster, tmp_path / "token.json", forge_state=True)
    one_line_failure(proc, "state mismatch")
    assert not (tmp_path / "token.json").exists()


def test_upload_jobs_get_verify(cluster: Cluster, signed_in: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(sample_image(200, 120, "PNG"))
    up = run("upload", str(image), "--mode", "gray", "--token-file", str(signed_in))
    job = up.stdout.strip()
    assert "100%" in up.stderr and f"job {job} accepted" in up.stderr
    assert job in run("jobs", "--token-file", str(signed_in)).stdout
    got = run("get", job, "--out", str(tmp_path / "out"), "--token-file", str(signed_in))
    assert "histo verify" in got.stdout
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"result.png", "histogram.json", "histogram.png", "receipt.jws",
                                               "receipt-keys.json"}
    ok = run("verify", str(out / "result.png"), str(out / "receipt.jws"), "--upload", str(image))
    assert ok.stdout.startswith(f"receipt ok: job {job} of bob") and "upload matches" in ok.stdout

    changed = tmp_path / "changed.png"  # any changed byte of the result
    data = bytearray((out / "result.png").read_bytes())
    data[len(data) // 2] ^= 0x01
    changed.write_bytes(bytes(data))
    one_line_failure(run("verify", str(changed), str(out / "receipt.jws"), check=False), "REJECTED", "not the result")

    receipt = (out / "receipt.jws").read_text().strip()  # any changed byte of the receipt's claims
    h, c, s = receipt.split(".")
    tampered = tmp_path / "tampered.jws"
    tampered.write_text(f"{h}.{c[:-2]}{'A' if c[-2] != 'A' else 'B'}{c[-1]}.{s}")
    one_line_failure(run("verify", str(out / "result.png"), str(tampered), "--keys", str(out / "receipt-keys.json"),
                         check=False), "REJECTED")

    keys = json.loads((out / "receipt-keys.json").read_text())["keys"]  # a key the cluster never published
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    unknown = tmp_path / "unknown-keys.json"
    unknown.write_text(json.dumps({"keys": {kid: other for kid in keys}}))
    one_line_failure(run("verify", str(out / "result.png"), str(out / "receipt.jws"), "--keys", str(unknown),
                         check=False), "REJECTED", "does not verify")
    only_other = tmp_path / "other-kid.json"
    only_other.write_text(json.dumps({"keys": {"histo-receipts:999": other}}))
    one_line_failure(run("verify", str(out / "result.png"), str(out / "receipt.jws"), "--keys", str(only_other),
                         check=False), "REJECTED", "no public key")


def test_script_signs_in_with_client_credentials_for_its_scopes_only(cluster: Cluster, tmp_path: Path) -> None:
    client_file = cluster.root / "people" / "ci.client"
    token_file = tmp_path / "ci-token.json"
    ok = run("login", "--url", cluster.url, "--ca", cluster.ca, "--client-file", str(client_file),
             "--scope", "uploader", "--token-file", str(token_file))
    assert "signed in as client.ci (uploader)" in ok.stdout
    run("jobs", "--token-file", str(token_file))  # the token works: exit 0
    refused = run("login", "--url", cluster.url, "--ca", cluster.ca, "--client-file", str(client_file),
                  "--scope", "admin", "--token-file", str(tmp_path / "admin.json"), check=False)
    one_line_failure(refused, "insufficient_scope")
    assert not (tmp_path / "admin.json").exists()


def test_bad_input_is_one_readable_line(cluster: Cluster, signed_in: Path, tmp_path: Path) -> None:
    one_line_failure(run("upload", str(tmp_path / "missing.jpg"), "--token-file", str(signed_in), check=False),
                     "cannot read")
    (tmp_path / "notimage.jpg").write_bytes(b"just text, not an image")
    one_line_failure(run("upload", str(tmp_path / "notimage.jpg"), "--quiet", "--token-file", str(signed_in),
                         check=False), "(415")
    one_line_failure(run("get", "../etc", "--token-file", str(signed_in), check=False), "not a job id")
    one_line_failure(run("get", "0" * 24, "--token-file", str(signed_in), check=False), "(404")
    one_line_failure(run("jobs", "--token-file", str(tmp_path / "none.json"), check=False), "histo login")
    loose = tmp_path / "loose.json"
    loose.write_text(signed_in.read_text())
    loose.chmod(0o644)
    one_line_failure(run("jobs", "--token-file", str(loose), check=False), "chmod 600")
