"""Canary writes during a drill, and a Jepsen-style set checker of what survived.

:class:`CanaryWriter` is a thread that POSTs ``{"seq": n, "ts": t}`` to the demo app's
``/canary`` at about ``rate`` writes per second (one request at a time; a slow
answer lowers the rate) and records, per write and per store (``mysql``, ``redis``,
``file``), whether the store acknowledged it. Sequence numbers start at ``base``
(unique per drill) so earlier drills' rows are ignored.

:func:`check_canaries` is a pure function: given the writes, the seqs a store holds
after recovery and the drill's key times, it classifies every write. Times are
seconds since the epoch (``time.time()``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import requests

STORES = ("mysql", "redis", "file")


@dataclass
class CanaryWrite:
    """One attempted write.

    ``acks`` maps a store to True (acknowledged: the app answered "ok" for it) or False
    (the app reported an error for it, or no answer came: outcome unknown — the write
    may still have reached the store). ``acked_at`` is when the answer arrived (None
    without an answer).
    """

    seq: int
    sent_at: float
    acked_at: float | None = None
    status: int | None = None
    acks: dict[str, bool] = field(default_factory=dict)

    def acked_by(self, store: str) -> bool:
        return bool(self.acks.get(store))


@dataclass
class CanaryResult:
    """What a set checker found for one store. Lists hold seqs, sorted."""

    store: str
    attempted: int
    acknowledged: int
    lost: list[int]
    lost_within_rpo: list[int]
    lost_in_outage: list[int]
    recovered: list[int]
    unexpected: list[int]
    duplicates: list[int]
    holes: list[int]
    rpo_s: float
    last_survivor_at: float | None

    @property
    def ok(self) -> bool:
        """No promised write lost, nothing unexpected or duplicated, no hole in the prefix."""
        return not (self.lost or self.unexpected or self.duplicates or self.holes)

    def summary(self) -> str:
        return (f"{self.store}: attempted {self.attempted}, acknowledged {self.acknowledged}, "
                f"lost {len(self.lost)}, lost within RPO {len(self.lost_within_rpo)}, "
                f"lost in outage {len(self.lost_in_outage)}, recovered {len(self.recovered)}, "
                f"unexpected {len(self.unexpected)}, duplicates {len(self.duplicates)}, "
                f"holes {len(self.holes)}, RPO {self.rpo_s:.1f} s")


def check_canaries(writes: Iterable[CanaryWrite], present: Iterable[int], store: str, *,
                   fault_at: float, promise_at: float | None, recovered_at: float | None,
                   seq_range: tuple[int, int] | None = None) -> CanaryResult:
    """Classify every write of one store after recovery.

    * ``present``: the seqs the store holds (as read back; repeats count as duplicates).
      Only seqs inside ``seq_range`` (``[first, end)``; default: the attempted ones'
      span) are considered, so other drills' rows are ignored.
    * pre-fault writes are those sent before ``fault_at``. An acknowledged pre-fault
      write missing afterwards is **lost** if it was acknowledged before ``promise_at``
      (the backup/archive point the scenario promises; ``None`` promises nothing), else
      **lost within RPO** (allowed, but measured).
    * writes acknowledged after the fault and before ``recovered_at`` and missing are
      **lost in outage** (reported); acknowledged at or after ``recovered_at`` and missing
      are **lost** (recovery must not lose new writes).
    * **recovered**: not acknowledged (error or no answer) but present.
    * **unexpected**: present but never attempted.
    * **holes**: the surviving pre-fault writes must be a prefix of the pre-fault writes
      with holes only at unacknowledged seqs: an acknowledged pre-fault seq missing while
      a later pre-fault seq survived is a hole (a restore that kept later data but not
      earlier).
    * ``rpo_s`` = ``fault_at`` − acknowledgement time of the last acknowledged pre-fault
      write that survived; 0 when every acknowledged pre-fault write survived; when none
      survived, ``fault_at`` − the first acknowledgement (a lower bound).
    """
    writes = sorted(writes, key=lambda w: w.seq)
    by_seq = {w.seq: w for w in writes}
    if seq_range is None:
        seq_range = (writes[0].seq, writes[-1].seq + 1) if writes else (0, 0)
    first, end = seq_range
    counts = Counter(s for s in present if first <= s < end)
    survivors = set(counts)

    pre_fault = [w for w in writes if w.sent_at < fault_at]
    acked_pre = [w for w in pre_fault if w.acked_by(store)]
    lost, within, outage = [], [], []
    for w in writes:
        if not w.acked_by(store) or w.seq in survivors:
            continue
        if w.sent_at < fault_at:
            promised = promise_at is not None and w.acked_at is not None and w.acked_at < promise_at
            (lost if promised else within).append(w.seq)
        elif recovered_at is not None and w.sent_at >= recovered_at:
            lost.append(w.seq)
        else:
            outage.append(w.seq)

    last_pre_survivor = max((w.seq for w in pre_fault if w.seq in survivors), default=None)
    holes = [w.seq for w in acked_pre
             if last_pre_survivor is not None and w.seq < last_pre_survivor and w.seq not in survivors]

    surviving_acked = [w for w in acked_pre if w.seq in survivors]
    last_survivor_at = max((w.acked_at for w in surviving_acked if w.acked_at), default=None)
    if all(w.seq in survivors for w in acked_pre):
        rpo_s = 0.0
    elif last_survivor_at is not None:
        rpo_s = max(0.0, fault_at - last_survivor_at)
    else:
        first_ack = min((w.acked_at for w in acked_pre if w.acked_at), default=fault_at)
        rpo_s = max(0.0, fault_at - first_ack)

    return CanaryResult(
        store=store,
        attempted=len(writes),
        acknowledged=sum(1 for w in writes if w.acked_by(store)),
        lost=sorted(lost),
        lost_within_rpo=sorted(within),
        lost_in_outage=sorted(outage),
        recovered=sorted(s for s in survivors if s in by_seq and not by_seq[s].acked_by(store)),
        unexpected=sorted(s for s in survivors if s not in by_seq),
        duplicates=sorted(s for s, n in counts.items() if n > 1),
        holes=sorted(holes),
        rpo_s=rpo_s,
        last_survivor_at=last_survivor_at,
    )


class CanaryWriter(threading.Thread):
    """Background writer of canaries to ``<app_url>/canary``; ``stop()`` ends it.

    ``writes`` (read it after ``stop()``) holds every attempt in seq order. Each
    request has a ``timeout_s`` limit; no answer means outcome unknown.
    """

    def __init__(self, app_url: str, base: int, rate: float = 10.0, timeout_s: float = 5.0) -> None:
        super().__init__(name="canary-writer", daemon=True)
        self.url = app_url.rstrip("/") + "/canary"
        self.base = base
        self.interval = 1.0 / rate
        self.timeout_s = timeout_s
        self.writes: list[CanaryWrite] = []
        self._stop_event = threading.Event()
        self._session = requests.Session()

    @property
    def seq_range(self) -> tuple[int, int]:
        """``[base, next seq)``: the seqs this writer may have attempted."""
        return self.base, self.base + len(self.writes)

    def write_one(self, seq: int) -> CanaryWrite:
        write = CanaryWrite(seq=seq, sent_at=time.time())
        try:
            answer = self._session.post(self.url, json={"seq": seq, "ts": write.sent_at}, timeout=self.timeout_s)
        except requests.RequestException:
            return write
        write.acked_at = time.time()
        write.status = answer.status_code
        try:
            body = answer.json()
        except ValueError:
            body = {}
        write.acks = {store: body.get(store) == "ok" for store in STORES} if isinstance(body, dict) else {}
        return write

    def run(self) -> None:
        seq = self.base
        while not self._stop_event.is_set():
            started = time.monotonic()
            self.writes.append(self.write_one(seq))
            seq += 1
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.timeout_s + 5)
        self._session.close()


def read_canaries(app_url: str, timeout_s: float = 10.0) -> dict[str, list[int] | None]:
    """GET ``/canary``: each store's seqs (None for a store the app could not read)."""
    answer = requests.get(app_url.rstrip("/") + "/canary", timeout=timeout_s)
    return answer.json()
