"""End to end in a real headless Chromium: enter a token, upload, see progress, the result, the
histogram plot and the SecOps event of a failed attempt; save a screenshot as a test artifact.

The browser trusts the cluster's CA through its own NSS database (certutil), so TLS is checked
as a user's browser checks it — no --ignore-certificate-errors."""
import shutil
import time
from pathlib import Path

import pytest

from histo.testing.cluster import sample_image

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")
                                     and shutil.which("certutil")),
                                reason="chromium, chromium-driver and libnss3-tools are installed by bootstrap")


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


def test_ui_signs_in_through_openbao_uploads_and_downloads_the_receipt(cluster, browser, tmp_path):
    """A person's whole path: Sign in -> OpenBao's page (userpass) -> back signed in with the role of
    their group -> upload -> result -> the signed receipt downloaded and verified offline -> Sign out."""
    try:
        _sign_in_upload_receipt(cluster, browser, tmp_path)
    except AssertionError:  # what the browser showed, as an artifact beside the screenshots
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "signin-failure.png"))
        (ARTIFACTS / "signin-failure.html").write_text(browser.current_url + "\n" + browser.page_source)
        raise


def _sign_in_upload_receipt(cluster, browser, tmp_path):
    import json
    from selenium.webdriver.common.by import By

    from histo.edge import receipts
    from histo.testing.signin import password_of

    image = tmp_path / "photo.png"
    image.write_bytes(sample_image(320, 200, "PNG"))
    browser.get(cluster.url + "/")
    browser.find_element(By.ID, "sign-in").click()
    _wait(lambda: "/ui/vault/" in browser.current_url, 30, "OpenBao's sign-in page")
    # OpenBao's production UI keeps ids, not data-test attributes; userpass is its first tab (vault/people.py)
    _wait(lambda: browser.find_elements(By.ID, "username"), 60, "the username field of OpenBao's page")
    browser.find_element(By.ID, "username").send_keys("bob")
    browser.find_element(By.ID, "password").send_keys(password_of(cluster.root, "bob"))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "signin-openbao.png"))
    browser.find_element(By.ID, "auth-submit").click()
    _wait(lambda: browser.current_url.startswith(cluster.url), 60, "the redirect back to histo")
    _wait(lambda: "bob" in browser.find_element(By.ID, "who").text, 30, "signed in as bob")
    assert "uploader" in browser.find_element(By.ID, "who").text
    assert "code=" not in browser.current_url and "state=" not in browser.current_url  # the code left the URL

    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "upload").click()
    _wait(lambda: browser.find_element(By.ID, "job-state").text == "done", 90, "job done")
    _wait(lambda: browser.execute_script("return document.getElementById('result-img').naturalWidth") > 0,
          what="the result")
    link = browser.find_element(By.ID, "receipt-link")
    _wait(lambda: link.is_displayed(), 30, "the receipt link")
    browser.save_screenshot(str(ARTIFACTS / "signin-result.png"))
    link.click()

    def downloaded() -> str:  # the file appears before Chromium has finished writing it
        done = [p.read_text().strip() for p in browser.downloads.iterdir() if p.name.endswith(".receipt.jws")]
        return next((t for t in done if t.count(".") == 2), "")
    _wait(lambda: bool(downloaded()), 30, "the download")
    jws = downloaded()
    status, _, raw = cluster.request("GET", "/api/v1/receipts/keys")
    assert status == 200
    claims = receipts.verify(jws, json.loads(raw)["keys"])
    assert claims["sub"] == "bob" and claims["upload_sha256"] == receipts.sha256_hex(image.read_bytes())

    browser.find_element(By.ID, "sign-out").click()
    _wait(lambda: "not signed in" in browser.find_element(By.ID, "who").text, 20, "signed out")
    assert (ARTIFACTS / "signin-result.png").stat().st_size > 10_000
