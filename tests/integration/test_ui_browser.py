"""End to end in a real headless Chromium: enter a token, upload, see progress, the result, the
histogram plot and the SecOps event of a failed attempt; save a screenshot as a test artifact.

The browser trusts the cluster's CA through its own NSS database (certutil), so TLS is checked
as a user's browser checks it — no --ignore-certificate-errors."""
import json
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


def test_ui_secops_view_shows_a_pushed_refusal_filters_it_and_info_noise_never_pushes_it_off(cluster, browser,
                                                                                             tmp_path):
    """The collector's relay pushes a refusal (the secops identity, real mTLS): the SecOps view lists its
    identity with the count in its layer; the layer filter hides and shows it; 200 informational events
    after it are grouped apart and the refusal stays on screen; markup in an event's fields is shown as
    text, never run."""
    import secrets

    from selenium.webdriver.common.by import By

    from histo.testing import secops

    tls = secops.issue_identity(cluster, tmp_path / "secops-tls")
    try:
        browser.get(cluster.url + "/")
        browser.find_element(By.ID, "token").send_keys(cluster.token("viewer"))
        browser.find_element(By.ID, "use-token").click()
        _wait(lambda: browser.find_element(By.ID, "ws-state").text == "live", what="event stream")
        record, marker = secops.record_id(), f"read secret/data/ui-{secrets.token_hex(4)}"
        status, _ = secops.push(cluster, "master1", secops.batch(record, [secops.refusal(1, marker, host="worker2")]),
                                tls)
        assert status == 200
        row_css = '#identities tr[data-identity="worker2"]'

        def row():
            return browser.find_element(By.CSS_SELECTOR, row_css)
        _wait(lambda: marker in row().text, what="the refusal in the per-identity table")
        cells = [td.text for td in row().find_elements(By.TAG_NAME, "td")]
        # the session's cluster may hold the masters' own refusals of worker2 from earlier tests (the same
        # identity's row joins every layer): this refusal is counted in the vault column and named last
        assert "spiffe://histo.internal/worker/worker2" in cells[0] and int(cells[1]) >= 1  # the vault column
        assert "vault_denied" in cells[8] and "vault1" in cells[9].split(", ")
        refusal = next(li for li in browser.find_elements(By.CSS_SELECTOR, "#events li") if marker in li.text)

        def chip(layer):
            return browser.find_element(By.CSS_SELECTOR, f'.chip[data-layer="{layer}"]')
        chip("firewall").click()
        _wait(lambda: not refusal.is_displayed()
              and not any(marker in e.text for e in browser.find_elements(By.CSS_SELECTOR, row_css)),
              what="the firewall filter hides a Vault refusal")
        chip("vault").click()
        _wait(lambda: marker in row().text and refusal.is_displayed(), what="the vault filter shows it")
        chip("all").click()

        noise = [secops.refusal(i, f"rotated {i}", host="master1", layer="secops", kind="cert_rotated",
                                severity="info", role="master") for i in range(2, 202)]
        for part in (noise[:100], noise[100:]):
            assert secops.push(cluster, "master1", secops.batch(record, part), tls)[0] == 200
        _wait(lambda: int(browser.find_element(By.ID, "n-info").text) >= 200, what="200 informational events")
        assert marker in row().text and refusal.is_displayed()
        assert marker in browser.find_element(By.ID, "events").text
        assert "cert_rotated" not in browser.find_element(By.ID, "events").text  # information is grouped apart
        browser.find_element(By.CSS_SELECTOR, "#info-box > summary").click()
        def rotations() -> int:  # the masters' own certificate rotations join the group too
            group = browser.find_element(By.CSS_SELECTOR, '#info-groups details[data-kind="cert_rotated"] b')
            return int(group.text.lstrip("×"))
        _wait(lambda: rotations() >= 200, what="the grouped information")
        browser.execute_script("document.getElementById('secops-card').scrollIntoView()")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "secops-view.png"))
        assert (ARTIFACTS / "secops-view.png").stat().st_size > 10_000

        # markup in what a compromised machine chose (the Vault path it asked for: the record's `what`) and
        # in what an outsider chose (the path of a refused request: the master's own auth_failure) is text
        tag = secrets.token_hex(4)
        chosen = f'<img src=x onerror="window.__histoXss=1"><script>window.__histoXss=2</script>{tag}'
        status, _ = secops.push(cluster, "master1", secops.batch(record, [
            secops.refusal(202, chosen, host="worker2", where="vault1")]), tls)
        assert status == 200
        assert cluster.request("GET", f"/api/v1/jobs/%3Cimg%20src=x%20onerror=window.__histoXss=3%3E{tag}",
                               token="not-a-token")[0] == 401
        _wait(lambda: browser.find_element(By.ID, "events").text.count(tag) >= 2, what="both events listed")
        assert chosen in browser.find_element(By.ID, "events").text
        assert f"<img src=x onerror=window.__histoXss=3>{tag}" in browser.find_element(By.ID, "events").text
        assert chosen in row().text  # worker2's last refusal, as text
        assert not browser.find_elements(By.CSS_SELECTOR, "#events img, #identities img, #info-groups img, "
                                                          "#events script, #identities script")
        assert browser.execute_script("return window.__histoXss") is None

        # an incident the collector only alerted on (a dry run, an alert rule) is on the incidents panel
        # with its decision, apart from contained hosts; its markup is text there too
        incident = secrets.token_hex(8)
        alerted = {**secops.refusal(203, "vault-denied-by-address -> alert", host="worker2", layer="secops",
                                    kind="incident_alerted", severity="critical", where="vault1"),
                   "where": None, "why": f"alert: dry run <b>{tag}</b>", "incident": incident,
                   "rule": "vault-denied-by-address"}
        assert secops.push(cluster, "master1", secops.batch(record, [alerted]), tls)[0] == 200
        listed = json.loads(cluster.request("GET", "/api/v1/cluster", token=cluster.token("viewer"))[2])["incidents"]
        mine = [i for i in listed if i.get("incident") == incident]
        assert [(i["host"], i["state"], i["rule"]) for i in mine] == [("worker2", "alerted", "vault-denied-by-address")]

        def panel() -> str:
            return str(browser.find_element(By.ID, "incidents").text)
        _wait(lambda: incident in panel(), what="the alerted incident on the incidents panel")
        assert f"alert: dry run <b>{tag}</b>" in panel()
        assert "alerted" in browser.find_element(By.ID, "incidents-count").text
        assert not browser.find_elements(By.CSS_SELECTOR, "#incidents b b, #incidents img")
    finally:
        secops.forget_identity(cluster)
