"""ApproximateTimeSynchronizer: jitter, drops, out-of-order arrival, queue limits, slop."""

from __future__ import annotations

import random

import pytest

from revavatar.core.messages import Header, Image, Time
from revavatar.graph.sync import ApproximateTimeSynchronizer, header_stamp_ns

MS = 1_000_000


def _msg(stamp_ns: int, tag: str = "") -> Image:
    return Image(Header(Time.from_ns(stamp_ns), tag), 1, 1, "mono8", 0, 1, b"\0")


def test_header_stamp_ns_round_trips() -> None:
    assert header_stamp_ns(_msg(3_000_000_123)) == 3_000_000_123


def test_jittered_streams_match_every_frame_once() -> None:
    rng = random.Random(0)
    sync = ApproximateTimeSynchronizer(3, queue_size=5, slop_ns=10 * MS)
    got: list[tuple[Image, ...]] = []
    sync.register_callback(lambda *m: got.append(m))
    for k in range(50):
        base = k * 33 * MS
        order = [0, 1, 2]
        rng.shuffle(order)  # arrival order across inputs varies per frame
        for i in order:
            sync.add(i, _msg(base + rng.randint(-4, 4) * MS, f"{i}"))
    assert len(got) == 50
    assert sync.stats.matched == 50 and sync.stats.dropped == 0
    for k, (a, b, c) in enumerate(got):
        stamps = [header_stamp_ns(m) for m in (a, b, c)]
        assert max(stamps) - min(stamps) <= 10 * MS
        assert abs(stamps[0] - k * 33 * MS) <= 4 * MS
        assert [m.header.frame_id for m in (a, b, c)] == ["0", "1", "2"]  # input order kept


def test_missing_frame_on_one_input_skips_that_set_only() -> None:
    sync = ApproximateTimeSynchronizer(3, queue_size=5, slop_ns=5 * MS)
    got = []
    for k in range(10):
        for i in range(3):
            if i == 1 and k == 4:
                continue  # input 1 drops frame 4
            out = sync.add(i, _msg(k * 33 * MS))
            if out is not None:
                got.append(header_stamp_ns(out[0]) // (33 * MS))
    assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert sync.stats.pruned == 2  # frame 4 of inputs 0 and 2 never matched
    assert sync.pending() == [0, 0, 0]


def test_out_of_order_arrival_within_an_input_still_matches() -> None:
    sync = ApproximateTimeSynchronizer(2, queue_size=4, slop_ns=2 * MS)
    assert sync.add(0, _msg(200 * MS)) is None
    assert sync.add(0, _msg(100 * MS)) is None  # older frame arrives late on input 0
    first = sync.add(1, _msg(101 * MS))
    assert first is not None and header_stamp_ns(first[0]) == 100 * MS
    second = sync.add(1, _msg(199 * MS))
    assert second is not None and header_stamp_ns(second[0]) == 200 * MS


def test_sets_come_out_once_and_in_order_late_messages_ignored() -> None:
    sync = ApproximateTimeSynchronizer(2, queue_size=4, slop_ns=2 * MS)
    sync.add(0, _msg(100 * MS))
    assert sync.add(1, _msg(100 * MS)) is not None
    assert sync.add(1, _msg(100 * MS)) is None  # same stamp again: already emitted
    assert sync.add(0, _msg(50 * MS)) is None  # older than the last set
    assert sync.stats.late == 2 and sync.stats.matched == 1


def test_spread_beyond_slop_does_not_match() -> None:
    sync = ApproximateTimeSynchronizer(3, queue_size=4, slop_ns=5 * MS)
    sync.add(0, _msg(100 * MS))
    sync.add(1, _msg(104 * MS))
    # each within 5 ms of 104, but 100..108 spans 8 ms > slop
    assert sync.add(2, _msg(108 * MS)) is None
    out = sync.add(0, _msg(105 * MS))
    assert out is not None
    assert [header_stamp_ns(m) // MS for m in out] == [105, 104, 108]


def test_tightest_candidate_is_chosen() -> None:
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop_ns=10 * MS)
    sync.add(0, _msg(90 * MS))
    sync.add(0, _msg(98 * MS))
    out = sync.add(1, _msg(99 * MS))
    assert out is not None and header_stamp_ns(out[0]) == 98 * MS
    assert sync.stats.pruned == 1  # 90 is older than the set, so it can never match
    assert sync.pending() == [0, 0]


def test_queue_size_evicts_oldest() -> None:
    sync = ApproximateTimeSynchronizer(2, queue_size=3, slop_ns=1 * MS)
    for k in range(5):
        sync.add(0, _msg(k * 10 * MS))
    assert sync.pending() == [3, 0]
    assert sync.stats.evicted == 2
    assert sync.add(1, _msg(0)) is None  # frame 0 was evicted
    assert sync.add(1, _msg(20 * MS)) is not None


def test_set_slop_and_bad_arguments() -> None:
    sync = ApproximateTimeSynchronizer(2, queue_size=2, slop_ns=0)
    sync.add(0, _msg(10))
    assert sync.add(1, _msg(11)) is None
    sync.set_slop(5)
    assert sync.add(0, _msg(12)) is not None
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(2, queue_size=0, slop_ns=1)
    with pytest.raises(IndexError):
        sync.add(2, _msg(1))
    with pytest.raises(ValueError, match="slop"):
        sync.set_slop(-1)
