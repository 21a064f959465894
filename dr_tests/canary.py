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

import math
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
    newest_recovered_at: float | None = None
    rpo_basis: str = ""
    loss_window_end: float | None = None

    @property
    def ok(self) -> bool:
        """No promised write lost, nothing unexpected or duplicated, no hole in the prefix."""
        return not (self.lost or self.unexpected or self.duplicates or self.holes)

    def summary(self) -> str:
        return (f"{self.store}: attempted {self.attempted}, acknowledged {self.acknowledged}, "
                f"lost {len(self.lost)}, lost within RPO {len(self.lost_within_rpo)}, "
                f"lost in outage {len(self.lost_in_outage)}, recovered {len(self.recovered)}, "
                f"unexpected {len(self.unexpected)}, duplicates {len(self.duplicates)}, "
                f"holes {len(self.holes)}, RPO {self.rpo_s:.1f} s ({self.rpo_basis})")


def check_canaries(writes: Iterable[CanaryWrite], present: Iterable[int], store: str, *,
                   fault_at: float, promise_at: float | None, recovered_at: float | None,
                   seq_range: tuple[int, int] | None = None, outage_promised: bool = False,
                   backup_at: float | None = None) -> CanaryResult:
    """Classify every write of one store after recovery, and measure the real RPO.

    * ``present``: the seqs the store holds (as read back; repeats count as duplicates).
      Only seqs inside ``seq_range`` (``[first, end)``; default: the attempted ones'
      span) are considered, so other drills' rows are ignored.
    * pre-fault writes are those sent before ``fault_at``. An acknowledged pre-fault
      write missing afterwards is **lost** if it was acknowledged before ``promise_at``
      (the backup/archive point the scenario promises; ``None`` promises nothing), else
      **lost within RPO** (allowed, but measured).
    * writes acknowledged after the fault and before ``recovered_at`` and missing are
      **lost in outage**: only reported, unless ``outage_promised`` (the scenario promises
      every acknowledged write, ``promise: fault``) -- then they are also **lost** and
      count in the RPO. Acknowledged at or after ``recovered_at`` and missing: **lost**
      (recovery must not lose new writes).
    * **recovered**: not acknowledged (error or no answer) but present.
    * **unexpected**: present but never attempted.
    * **holes**: the surviving pre-fault writes must be a prefix of the pre-fault writes
      with holes only at unacknowledged seqs: an acknowledged pre-fault seq missing while
      a later pre-fault seq survived is a hole (a restore that kept later data but not
      earlier).
    * RPO, the real data-loss window: 0 when no acknowledged write up to the end of the
      loss window was lost; else ``loss_window_end - newest_recovered_at``, where the end
      is ``fault_at`` (or the acknowledgement of the latest counted outage loss, if later)
      and ``newest_recovered_at`` is the newest state the recovery brought back:
        - the acknowledgement of the newest surviving acknowledged write older than the
          first lost one (``rpo_basis`` "newest surviving canary write"), else
        - when no write of this drill survived before the first loss, the older of that
          loss's acknowledgement (the recovered state predates it) and ``backup_at`` (the
          consistency point of the restored backup: it holds nothing newer) -- so a backup
          older than the canary writer is measured by its own age, not by the drill's few
          seconds of writes.
      ``rpo_basis`` names what the newest recovered state was taken from.
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
    counted = sorted(set(lost) | set(within) | (set(outage) if outage_promised else set()))
    counted = [s for s in counted if by_seq[s].sent_at < fault_at or outage_promised and s in outage]
    point = recovery_point(writes, survivors, store, counted, by_seq, fault_at=fault_at, backup_at=backup_at,
                           last_survivor_at=last_survivor_at)
    newest_recovered_at, rpo_basis, window_end, rpo_s = point
    if outage_promised:
        lost = sorted(set(lost) | set(outage))

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
        newest_recovered_at=newest_recovered_at,
        rpo_basis=rpo_basis,
        loss_window_end=window_end,
    )


def recovery_point(writes: list[CanaryWrite], survivors: set[int], store: str, counted_lost: list[int],
                   by_seq: dict[int, CanaryWrite], *, fault_at: float, backup_at: float | None,
                   last_survivor_at: float | None) -> tuple[float | None, str, float, float]:
    """``(newest_recovered_at, basis, loss_window_end, rpo_s)`` for one store (see
    :func:`check_canaries`); ``counted_lost`` are the lost acknowledged seqs that count in RPO."""
    if not counted_lost:
        return last_survivor_at, "every acknowledged write survived", fault_at, 0.0
    first_lost = by_seq[counted_lost[0]]
    window_end = max([fault_at] + [by_seq[s].acked_at or fault_at for s in counted_lost])
    before_loss = [w.acked_at for w in writes if w.seq < first_lost.seq and w.seq in survivors
                   and w.acked_by(store) and w.acked_at]
    if before_loss:
        newest, basis = max(before_loss), "newest surviving canary write"
    else:
        upper = first_lost.acked_at if first_lost.acked_at is not None else first_lost.sent_at
        if backup_at is not None and backup_at < upper:
            newest, basis = backup_at, "backup consistency point (no canary write of this drill survived)"
        else:
            newest, basis = upper, "before the first lost canary write (no write of this drill survived)"
    return newest, basis, window_end, max(0.0, window_end - newest)


def coverage_problem(writes: Iterable[CanaryWrite], store: str, start: float, end: float,
                     min_total: int = 20, min_per_s: float = 1.0) -> str | None:
    """Why the canary writes do not cover the window ``[start, end)`` the scenario promises to
    keep (None when they do): at least ``min_total`` writes acknowledged by ``store`` in it,
    and at least ``min_per_s`` per second of it. Without that a drill proves nothing."""
    acked = sum(1 for w in writes if w.acked_by(store) and w.acked_at is not None and start <= w.acked_at < end)
    length = max(0.0, end - start)
    needed = max(min_total, math.ceil(length * min_per_s))
    if acked >= needed:
        return None
    return (f"canary {store}: only {acked} acknowledged writes in the promised window of {length:.1f} s "
            f"(need at least {needed}: {min_total} in total and {min_per_s:g} per second) -- the drill "
            "cannot show what was kept; check the app and the canary rate")


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
