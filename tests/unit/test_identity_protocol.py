"""Pure logic of identities, the task protocol and result binding (fakes allowed here)."""
import asyncio

import pytest

from histo.config import ConfigError, ServiceConfig
from histo.compute import equalize, frame
from histo.master.scheduler import Pending, Scheduler
from histo.protocol import ProtocolError, TaskHeader
from histo.tls.identity import IdentityError, identity_from_peercert, parse_spiffe, require_role


def peercert(*uris):
    return {"subjectAltName": tuple(("URI", u) for u in uris) + (("DNS", "x.histo.internal"),)}


def test_identity_parsing_and_role_checks():
    ident = require_role(peercert("spiffe://histo.internal/master/master1"), ("master",))
    assert (ident.role, ident.host) == ("master", "master1")
    with pytest.raises(IdentityError):
        require_role(peercert("spiffe://histo.internal/worker/worker1"), ("master",))
    with pytest.raises(IdentityError):
        identity_from_peercert(peercert("spiffe://evil.example/master/master1"))
    with pytest.raises(IdentityError):  # two identities in one certificate is ambiguous
        identity_from_peercert(peercert("spiffe://histo.internal/master/a", "spiffe://histo.internal/worker/b"))
    with pytest.raises(IdentityError):
        identity_from_peercert(None)
    with pytest.raises(IdentityError):
        parse_spiffe("spiffe://histo.internal/master")


def _hdr(**kw):
    base = dict(job="job1", task=0, attempt="att1", phase="equalize", image_mode="L", width=4, rows=2,
                reply_to="https://127.0.0.1:8443")
    base.update(kw)
    return TaskHeader(**base)


def test_task_header_round_trip_and_validation():
    hdr = _hdr(mode="rgb")
    assert TaskHeader.from_headers(hdr.to_headers()) == hdr
    for bad in ({"X-Histo-Phase": "steal"}, {"X-Histo-Phase": "hist"}, {"X-Histo-Mode": "sepia"},
                {"X-Histo-Job": "../etc"}, {"X-Histo-Width": "0"},
                {"X-Histo-Reply-To": "http://plain"}, {"X-Histo-Task": "x"}):
        with pytest.raises(ProtocolError):
            TaskHeader.from_headers({**hdr.to_headers(), **bad})


def _scheduler_with_pending(loop):
    sched = Scheduler(client=None, reply_to="https://m", workers=dict, on_task_state=lambda *a: None,
                      task_timeout=1)
    fut = loop.create_future()
    sched.pending[("job1", 0, "equalize")] = Pending("job1", 0, "equalize", "att1", "worker1", "L", 4, 2, fut, 1,
                                                     "PNG")
    return sched, fut


HIST = [0] * 256
HIST[7] = HIST[9] = 4  # 8 pixels of two values: the table spreads them to 0 and 255
AFTER = [0] * 256
AFTER[0] = AFTER[255] = 4


def _png(width: int = 4, height: int = 2) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def framed(**kw):
    fields = {"image": _png(), "fmt": "PNG", "width": 4, "height": 2, "channels": ["L"],
              "hist_before": {"L": HIST}, "hist_after": {"L": AFTER}, **kw}
    return frame.pack_result(equalize.Result(**fields), b"plot")


def test_result_is_bound_to_attempt_and_worker_and_not_replayable():
    loop = asyncio.new_event_loop()
    try:
        sched, fut = _scheduler_with_pending(loop)
        assert sched.accept_result(_hdr(attempt="other"), "worker1", framed()).reason.startswith("no such task")
        assert "assigned to worker1" in sched.accept_result(_hdr(), "worker2", framed()).reason
        assert sched.accept_result(_hdr(), "worker1", framed()) is None
        assert fut.result()[1] == framed()
        assert "replayed" in sched.accept_result(_hdr(), "worker1", framed()).reason
    finally:
        loop.close()


def test_a_result_must_be_the_jobs_image_equalized_by_the_table_of_its_own_histogram():
    assert equalize.equalized_histogram(HIST) == AFTER
    loop = asyncio.new_event_loop()
    try:
        sched, fut = _scheduler_with_pending(loop)
        assert "malformed" in sched.accept_result(_hdr(), "worker1", b"\0" * 7).reason
        shifted = [0] * 256
        shifted[1] = shifted[255] = 4  # the right counts, another table
        for wrong in ({"width": 5}, {"fmt": "JPEG"}, {"channels": ["R", "G", "B"]}, {"channels": ["Y"]},
                      {"hist_before": {"L": [2 if i == 7 else 6 if i == 9 else 0 for i in range(256)]}},  # another
                      {"hist_after": {"L": HIST}},  # not equalized at all
                      {"hist_after": {"L": shifted}}, {"hist_after": {"L": AFTER[:255]}},
                      {"hist_before": {"L": [v * 2 for v in HIST]}, "hist_after": {"L": [v * 2 for v in AFTER]}},
                      {"hist_before": {"L": [-1] + HIST[1:9] + [5] + HIST[10:]}},
                      {"hist_before": {"L": 5}}, {"hist_after": {"L": "x"}},  # not lists: refused, no TypeError
                      {"hist_before": {"L": [float(v) for v in HIST]}}, {"hist_after": {"L": [True] + AFTER[1:]}},
                      {"channels": ["X"], "hist_before": {"X": HIST}, "hist_after": {"X": AFTER}},
                      {"image": b"<html><script>alert(1)</script>"},  # histograms right, not an image
                      {"image": _png(5, 2)}, {"image": _png()[:8]}):  # another size; a header cut short
            refused = sched.accept_result(_hdr(), "worker1", framed(**wrong))
            assert refused is not None and "malformed result" in refused.reason, wrong
        deep = b"[" * 100_000 + b"]" * 100_000  # meta nested past the parser's recursion limit
        for body in (len(deep).to_bytes(4, "big") + deep, (1 << 30).to_bytes(4, "big") + b"{}"):
            refused = sched.accept_result(_hdr(), "worker1", body)
            assert refused is not None and "malformed result" in refused.reason
        assert not fut.done()  # still waiting for a right answer
        assert sched.accept_result(_hdr(), "worker1", framed()) is None
        result, body = fut.result()
        assert result.image == _png() and body == framed()
    finally:
        loop.close()


def test_config_validation(tmp_path):
    base = {"role": "master", "name": "m1", "address": "127.0.0.1", "vault_url": "https://v", "vault_ca": "ca",
            "creds_dir": "c", "state_dir": "s", "zk_hosts": "z:2281"}
    cfg = ServiceConfig.from_dict(base)
    assert cfg.spiffe_id == "spiffe://histo.internal/master/m1"
    with pytest.raises(ConfigError):
        ServiceConfig.from_dict({**base, "role": "root"})
    with pytest.raises(ConfigError):
        ServiceConfig.from_dict({**base, "pasword": "x"})
    # keys an older release wrote load and steer nothing; the worker's strip settings are checked
    assert ServiceConfig.from_dict({**base, "tiles_per_worker": 2, "min_tile_pixels": 1}) == cfg
    for bad in ({"worker_strip_threads": 0}, {"worker_strip_min_pixels": "big"},
                {"worker_pixel_cache_bytes": -1}, {"worker_pixel_cache_bytes": (1536 << 20) + 1},
                {"verify_fraction": 1.5}, {"verify_fraction": "all"}, {"verify_fraction": True}):
        with pytest.raises(ConfigError):
            ServiceConfig.from_dict({**base, **bad})
    with pytest.raises(ConfigError):
        ServiceConfig.load(tmp_path / "missing.json")
