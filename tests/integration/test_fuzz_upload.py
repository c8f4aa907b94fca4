"""Fuzz the upload endpoint (and the job routes) with hypothesis: at least 1,000 generated
requests against the real cluster, and not one 5xx."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histo.testing.cluster import multipart, sample_image

SEEDS = [sample_image(24, 16, "JPEG"), sample_image(24, 16, "PNG")]
CALLS = {"n": 0, "statuses": {}}


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data[: max(0, min(len(data), cut))] if cut >= 0 else data)
    for pos, val in flips:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf)


images = st.one_of(
    st.binary(max_size=2048),
    st.builds(_mutate, st.sampled_from(SEEDS), st.integers(-1, 4000),
              st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)),
    st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"<svg/>", b"%PDF-1.7"]),
)
fields = st.dictionaries(st.sampled_from(["mode", "image2", "x", "mode "]),
                         st.text(max_size=24), max_size=3)
ctypes = st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "text/html", ""])


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(image=images, extra=fields,
       mode=st.one_of(st.none(), st.sampled_from(["gray", "luma", "rgb", "RGB", "", "x" * 40])),
       ctype=ctypes, name=st.sampled_from(["image", "image", "img", ""]), raw=st.booleans())
def test_upload_never_5xx(cluster, image, extra, mode, ctype, name, raw):
    if raw:  # not even multipart
        status, _, body = cluster.request("POST", "/api/v1/jobs", token=cluster.token("uploader"), body=image,
                                          headers={"Content-Type": ctype or "multipart/form-data; boundary=x"})
    else:
        form = dict(extra)
        if mode is not None:
            form["mode"] = mode
        body_bytes, content_type = multipart(form, {name or "image": ("f.bin", image, ctype or "image/png")})
        status, _, body = cluster.request("POST", "/api/v1/jobs", token=cluster.token("uploader"), body=body_bytes,
                                          headers={"Content-Type": content_type})
    CALLS["n"] += 1
    CALLS["statuses"][status] = CALLS["statuses"].get(status, 0) + 1
    assert status < 500, body[:200]
    if status >= 400:
        assert set(json.loads(body)) == {"error", "message"}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(job=st.text(max_size=80), suffix=st.sampled_from(["", "/result", "/histogram", "/histogram.png", "/x"]))
def test_job_routes_never_5xx(cluster, job, suffix):
    from urllib.parse import quote
    status, _, body = cluster.request("GET", f"/api/v1/jobs/{quote(job, safe='')}{suffix}",
                                      token=cluster.token("uploader"))
    CALLS["n"] += 1
    assert status < 500, body[:200]


def test_fuzz_ran_enough_and_cluster_still_serves(cluster):
    assert CALLS["n"] >= 1000, CALLS
    assert any(400 <= s < 500 for s in CALLS["statuses"]) and CALLS["statuses"].get(202, 0) >= 1, CALLS
    status, doc = cluster.upload(sample_image(64, 48, "JPEG"))
    assert status == 202 and cluster.wait_job(doc["id"])["state"] == "done"
