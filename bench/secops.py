"""Events per second the SecOps collector stores on this machine (issue 17 item 6, in part):
`Collector.ingest` of a typical event line, (a) flushed only (a checkpoint fsyncs), (b) fsynced per
event, as with omprog's confirmations (`histo audit collect --confirm`), and `walk` (the verifier)
over the result. Signing is a local P-256 key here: one Vault call per checkpoint interval does not
bound the rate. Writes bench/secops.json; nothing is asserted."""
from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histo.secops.chain import walk  # noqa: E402
from histo.secops.collector import Collector  # noqa: E402
from tests.unit.test_secops_chain import LocalSigner  # noqa: E402

LINE = json.dumps({"kind": "zk_auth_failure", "host": "worker1", "spiffe": "spiffe://histo.internal/worker/worker1",
                   "layer": "zookeeper", "detail": "digest auth failed for histo-worker from 192.168.56.31"})


def rate(n: int, confirm: bool, d: Path) -> tuple[float, Path]:
    c = Collector(d / f"log-{confirm}", LocalSigner(), None, interval=3600)
    t = time.perf_counter()
    for _ in range(n):
        c.ingest(LINE)
        if confirm:
            c.log.sync()
    elapsed = time.perf_counter() - t
    c.close()
    return n / elapsed, d / f"log-{confirm}"


def rate_detecting(n: int, d: Path) -> float:
    """The collector as deployed (`--respond alert`): attribution, the rules, incident entries. The
    events: a Vault denial of worker1 as rsyslog hands it over (each one evidence of worker1's incident,
    so two entries a line), and as many ordinary warnings no rule matches."""
    from histo.secops.detect import Detector
    from histo.secops.respond import Responder
    from histo.secops.rules import load_rules
    from histo.secops.sources import Inventory
    hosts = [{"name": "vault1", "role": "vault", "address": "192.168.56.10"},
             {"name": "master1", "role": "master", "address": "192.168.56.21"},
             {"name": "worker1", "role": "worker", "address": "192.168.56.31"},
             {"name": "worker2", "role": "worker", "address": "192.168.56.32"}]
    responder = Responder(contain=lambda host, inc: {"actions": []}, guard=lambda host, held: None,
                          record=lambda event: None, dry_run=True)
    c = Collector(d / "log-detect", LocalSigner(), None, interval=3600, inventory=Inventory(hosts),
                  self_host="secops1", detector=Detector(load_rules()), responder=responder)
    responder.record = c.record
    denial = {"type": "response", "error": "1 error occurred:\n\t* permission denied\n\n",
              "auth": {"metadata": {"role_name": "histo-worker1"}},
              "request": {"path": "secret/data/histo/zk/super", "operation": "read", "remote_address": "192.168.56.31"}}
    lines = [json.dumps({"msg": json.dumps(denial), "tag": "vault-audit", "host": "vault1", "from": "192.168.56.10",
                         "ts": 1000.0 + i}) if i % 2 == 0 else
             json.dumps({"msg": "worker_left", "tag": "histo-events", "host": "master1", "from": "192.168.56.21"})
             for i in range(n)]
    c.start()
    t = time.perf_counter()
    for line in lines:
        c.ingest(line)
    elapsed = time.perf_counter() - t
    c.close()
    return n / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        flushed, path = rate(20000, False, d)
        confirmed, _ = rate(2000, True, d)
        detecting = rate_detecting(10000, d)
        lines = path.read_text().splitlines()
        t = time.perf_counter()
        assert walk(lines, {})[1] is None
        verify = len(lines) / (time.perf_counter() - t)
    out = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
           "events_per_s_flushed": round(flushed), "events_per_s_fsync_each": round(confirmed),
           "events_per_s_detecting": round(detecting),
           "verify_entries_per_s": round(verify)}
    (Path(__file__).with_name("secops.json")).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
