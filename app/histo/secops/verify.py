"""`histo audit verify`: a SecOps log against its signed checkpoints (the collector's file of them and
the anchored history kept off the collector). Names the first entry that was changed, inserted,
reordered or removed, or a checkpoint that is forged or rolled back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .chain import Finding, Head, walk
from .checkpoint import Checkpoint, CheckpointError, verify


@dataclass
class Report:
    head: Head
    finding: Finding | None
    checkpoints: int  # signed checkpoints that verified
    covered: int  # the highest entry a signed checkpoint covers
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.finding is None

    def summary(self) -> str:
        if self.finding is not None:
            return f"log REJECTED: {self.finding.kind}: {self.finding.message}"
        tail = self.head.seq - self.covered
        return (f"log ok: {self.head.seq} entries, {self.checkpoints} signed checkpoints, entries up to "
                f"{self.covered} covered" + (f", {tail} after the last checkpoint (chained, not yet signed)"
                                             if tail else ""))


def _checked(jws_list: Iterable[str], keys: Mapping[str, str], where: str) -> tuple[list[Checkpoint], Finding | None]:
    out = []
    for n, jws in enumerate(jws_list, 1):
        if not jws.strip():
            continue
        try:
            out.append(verify(jws.strip(), keys))
        except CheckpointError as exc:
            return out, Finding("bad_checkpoint", 0, n, f"checkpoint {n} of {where} is not genuine: {exc}")
    return out, None


def audit(lines: Iterable[str], local: Iterable[str], anchored: Iterable[str], keys: Mapping[str, str],
          collector: str | None = None) -> Report:
    """`lines`: the log; `local`: the collector's checkpoint lines; `anchored`: the off-collector
    history, oldest first; `keys`: kid -> public key PEM of the collector's transit key."""
    cps, bad = _checked(local, keys, "the checkpoint file")
    anchors, bad_anchor = _checked(anchored, keys, "the anchored history")
    bad = bad or bad_anchor
    notes = [] if anchors else ["no anchored checkpoint: a removed tail would not be detected"]
    for earlier, later in zip(anchors, anchors[1:]):
        if later.seq < earlier.seq:
            bad = bad or Finding("bad_checkpoint", later.seq, 0, f"the anchored checkpoint was rolled back from "
                                 f"entry {earlier.seq} to entry {later.seq}")
    by_seq: dict[int, str] = {}
    for cp in cps + anchors:
        if collector is not None and cp.collector != collector:
            bad = bad or Finding("bad_checkpoint", cp.seq, 0, f"a checkpoint of {cp.collector}, not of {collector}")
        if by_seq.setdefault(cp.seq, cp.hash) != cp.hash:
            bad = bad or Finding("bad_checkpoint", cp.seq, 0, f"two signed checkpoints disagree on entry {cp.seq}")
    head, finding = walk(lines, by_seq)
    return Report(head, bad or finding, len(cps) + len(anchors), max(by_seq, default=0), notes)
