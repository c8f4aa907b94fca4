"""Secret zero does not linger, and key configuration changes reach the masters (issue 13, item 9)."""
import time

from histo.edge.tokens import issue_token
from histo.testing.attacker import root_client


def _status(cluster, token: str, url: str) -> int:
    return cluster.request("GET", "/api/v1/jobs", token=token, url=url)[0]


def _until(pred, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_raised_min_decryption_version_reaches_every_master_within_seconds(cluster):
    root = root_client(cluster)
    old = issue_token(root, role="uploader", subject="carol", ttl_seconds=900)
    for url in cluster.urls:
        assert _status(cluster, old, url) == 200
    root.secrets.transit.rotate_key("histo-tokens", mount_point="transit")
    latest = int(root.secrets.transit.read_key("histo-tokens", mount_point="transit")["data"]["latest_version"])
    new = issue_token(root, role="uploader", subject="carol", ttl_seconds=900)
    for url in cluster.urls:  # the new version is in use everywhere before the old one is retired
        assert _until(lambda u=url: _status(cluster, new, u) == 200, 5)
    try:
        t0 = time.time()
        root.secrets.transit.update_key_configuration("histo-tokens", min_decryption_version=latest,
                                                      mount_point="transit")
        for url in cluster.urls:  # no newer version appeared: only the periodic re-read can notice
            assert _until(lambda u=url: _status(cluster, old, u) == 401, 10), url
        assert time.time() - t0 < 10
        for url in cluster.urls:  # legitimate: tokens of the current version still work
            assert _status(cluster, new, url) == 200
    finally:  # the session's other tests hold tokens of older versions
        root.secrets.transit.update_key_configuration("histo-tokens", min_decryption_version=1,
                                                      mount_point="transit")
        for url in cluster.urls:
            assert _until(lambda u=url: _status(cluster, cluster.token("uploader"), u) == 200, 10)
