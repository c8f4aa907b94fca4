"""End to end in a real headless Chromium: enter a token, upload, see progress, the result, the
histogram plot and the SecOps event of a failed attempt; save a screenshot as a test artifact.

The browser trusts the cluster's CA through its own NSS database (certutil), so TLS is checked
as a user's browser checks it — no --ignore-certificate-errors."""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from histo.testing.cluster import sample_image

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")
                                     and shutil.which("certutil")),
                                reason="chromium, chromium-driver and libnss3-tools are installed by bootstrap")


@pytest.fixture
def browser(cluster):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = Path(tempfile.mkdtemp(prefix="histo-browser-"))
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "histo-test-ca", "-i", cluster.ca],
                   check=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={home / 'profile'}", "--window-size=1400,1500"):
        opts.add_argument(arg)
    env = dict(os.environ, HOME=str(home))
    service = Service(shutil.which("chromedriver"), env=env)
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(home, ignore_errors=True)


def _wait(pred, timeout=30, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_ui_upload_result_and_secops_event(cluster, browser, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "photo.jpg"
    image.write_bytes(sample_image(640, 420, "JPEG"))
    browser.get(cluster.url + "/")
    assert "histo" in browser.title
    assert "eyJ" not in browser.page_source
    browser.find_element(By.ID, "token").send_keys(cluster.token("admin"))
    browser.find_element(By.ID, "use-token").click()
    _wait(lambda: "admin" in browser.find_element(By.ID, "who").text, what="signed in")
    _wait(lambda: browser.find_element(By.ID, "ws-state").text == "live", what="event stream")

    cluster.request("GET", "/api/v1/jobs", token="stolen.or.forged")  # a failed attempt
    _wait(lambda: "auth_failure" in browser.find_element(By.ID, "events").text, what="the SecOps event")

    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "upload").click()
    _wait(lambda: "Accepted" in browser.find_element(By.ID, "upload-status").text, what="upload accepted")
    _wait(lambda: browser.find_element(By.ID, "job-state").text == "done", 60, "job done")
    assert float(browser.find_element(By.ID, "job-progress").get_attribute("value")) == 100
    for img in ("result-img", "hist-img"):
        _wait(lambda img=img: browser.execute_script(
            f"return document.getElementById('{img}').naturalWidth") > 0, what=img)
    _wait(lambda: "worker" in browser.find_element(By.ID, "cluster").text, what="cluster view")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui.png"))
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000
