"""Approximate-time synchronization of N message streams by header stamp (message_filters style).

The three headset cameras are not hardware-triggered together, so the restoration node cannot
wait for identical stamps: like ``message_filters.ApproximateTimeSynchronizer`` it keeps a small
per-input queue and emits a set (one message per input) as soon as the newest message can be
matched with one message of every other input whose stamps all lie within ``slop``. Each message
is emitted at most once, and sets come out in stamp order (older unmatched messages are dropped
when a newer set is emitted, since a set older than one already delivered would be useless).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ApproximateTimeSynchronizer", "SyncStats", "header_stamp_ns"]


def header_stamp_ns(msg: Any) -> int:
    """Header stamp (ns) of a core message (``msg.header.stamp``)."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class SyncStats:
    """Counters of a synchronizer.

    Attributes:
        matched: sets emitted.
        evicted: messages pushed out of a full input queue.
        pruned: messages left unmatched when a newer set was emitted.
        late: messages older than the last set emitted for their input (ignored).
    """

    matched: int = 0
    evicted: int = 0
    pruned: int = 0
    late: int = 0

    @property
    def dropped(self) -> int:
        """Every message that never made it into a set."""
        return self.evicted + self.pruned + self.late


class ApproximateTimeSynchronizer:
    """Match one message per input whose header stamps lie within ``slop_ns`` of each other.

    Args:
        n_inputs: number of inputs (>= 1).
        queue_size: messages kept per input (>= 1); the oldest is evicted beyond it.
        slop_ns: largest allowed spread (max stamp - min stamp) of a set, ns (>= 0).
        stamp_of: stamp (ns) of a message; default :func:`header_stamp_ns`.

    Raises:
        ValueError: an argument out of range.
    """

    def __init__(
        self,
        n_inputs: int,
        queue_size: int,
        slop_ns: int,
        stamp_of: Callable[[Any], int] = header_stamp_ns,
    ) -> None:
        if n_inputs < 1 or queue_size < 1 or slop_ns < 0:
            msg = (
                f"need n_inputs >= 1, queue_size >= 1, slop_ns >= 0; got {n_inputs}, "
                f"{queue_size}, {slop_ns}"
            )
            raise ValueError(msg)
        self.n_inputs = n_inputs
        self.queue_size = queue_size
        self.slop_ns = int(slop_ns)
        self._stamp_of = stamp_of
        self._queues: list[dict[int, Any]] = [{} for _ in range(n_inputs)]
        self._last: list[int | None] = [None] * n_inputs
        self._callbacks: list[Callable[..., None]] = []
        self._lock = threading.Lock()
        self.stats = SyncStats()

    def register_callback(self, callback: Callable[..., None]) -> None:
        """Call ``callback(*msgs)`` (one per input, in input order) for every matched set."""
        self._callbacks.append(callback)

    def set_slop(self, slop_ns: int) -> None:
        """Change the slop (ns) for sets matched from now on (live parameter change)."""
        if slop_ns < 0:
            msg = f"slop must be >= 0 ns, got {slop_ns}"
            raise ValueError(msg)
        self.slop_ns = int(slop_ns)

    def pending(self) -> list[int]:
        """Messages waiting in each input queue."""
        with self._lock:
            return [len(q) for q in self._queues]

    def add(self, index: int, msg: Any) -> tuple[Any, ...] | None:
        """Add a message to input ``index``; return the set it completed (also sent to callbacks).

        Raises:
            IndexError: ``index`` is not an input.
        """
        if not 0 <= index < self.n_inputs:
            msg_ = f"input {index} out of range 0..{self.n_inputs - 1}"
            raise IndexError(msg_)
        stamp = self._stamp_of(msg)
        with self._lock:
            last = self._last[index]
            if last is not None and stamp <= last:
                self.stats.late += 1
                return None
            queue = self._queues[index]
            if stamp in queue:  # a duplicate stamp replaces the earlier message
                self.stats.evicted += 1
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.stats.evicted += 1
            if stamp not in queue:
                return None
            chosen = self._match(index, stamp)
            if chosen is None:
                return None
            matched = tuple(q.pop(s) for q, s in zip(self._queues, chosen, strict=True))
            for i, (q, s) in enumerate(zip(self._queues, chosen, strict=True)):
                older = [t for t in q if t <= s]
                for t in older:
                    del q[t]
                self.stats.pruned += len(older)
                self._last[i] = s
            self.stats.matched += 1
        for callback in self._callbacks:
            callback(*matched)
        return matched

    def _match(self, index: int, stamp: int) -> Sequence[int] | None:
        """The tightest set containing (index, stamp) with spread <= slop, or None."""
        candidates: list[list[int]] = []
        for i, q in enumerate(self._queues):
            if i == index:
                candidates.append([stamp])
                continue
            near = sorted((s for s in q if abs(s - stamp) <= self.slop_ns),
                          key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        best: tuple[int, ...] | None = None
        best_spread = self.slop_ns + 1
        for combo in itertools.product(*candidates):
            spread = max(combo) - min(combo)
            if spread < best_spread:
                best, best_spread = combo, spread
        return best
