import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .cluster_fixture import start, stop


@pytest.fixture(scope="session")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="histo-it-"))
    try:
        yield start(root / "local")
    finally:
        stop(root / "local")
        if not os.environ.get("HISTO_KEEP_TEST_STATE"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def browser(cluster):
    """A headless Chromium (selenium) that trusts the cluster's CA and OpenBao's through its own NSS
    database, as a user's browser does; skipped where chromium, chromedriver or certutil is missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver") and shutil.which("certutil")):
        pytest.skip("chromium, chromium-driver and libnss3-tools are installed by bootstrap")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = Path(tempfile.mkdtemp(prefix="histo-browser-"))
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    # every root of the bundle (certutil -A takes the first certificate of a file only: after a root
    # rotation the cluster's CA file holds two, and the masters' leaves chain to the second), and
    # OpenBao's own listener CA: the sign-in page is OpenBao's (its UI), checked like any site
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    vault_ca = cluster.config("master1")["vault_ca"]
    for name, path in (("histo-test-ca", Path(cluster.ca)), ("histo-test-vault-ca", Path(vault_ca))):
        for i, cert in enumerate(x509.load_pem_x509_certificates(path.read_bytes())):
            one = home / f"{name}-{i}.pem"
            one.write_bytes(cert.public_bytes(Encoding.PEM))
            subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", f"{name}-{i}", "-i",
                            str(one)], check=True)
    downloads = home / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={home / 'profile'}", "--window-size=1400,1500"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    env = dict(os.environ, HOME=str(home))
    service = Service(shutil.which("chromedriver"), env=env)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.downloads = downloads  # where the receipt lands
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(home, ignore_errors=True)
