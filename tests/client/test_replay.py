"""ReplayLoader on its own: record from the stage snapshot, replay for the next candidates, then let go."""

from __future__ import annotations

import logging

import pytest

from lrtune.client import ReplayLoader
from lrtune.client.protocol import WireSegment


def _seg(**kw: object) -> WireSegment:
    base: dict[str, object] = {
        "job_id": "j",
        "segment_id": 0,
        "phase": "explore",
        "start_step": 0,
        "steps": 3,
        "lr": 0.1,
        "lr_end": 0.1,
        "replay": True,
    }
    return WireSegment.from_dict({**base, **kw})


def _take(it: object, n: int) -> list[int]:
    return [next(it) for _ in range(n)]  # type: ignore[call-overload]


def test_candidates_see_the_batches_recorded_after_the_snapshot() -> None:
    data = ReplayLoader(list(range(100)))
    it = iter(data)
    assert _take(it, 2) == [0, 1]  # before the stage: passed through, not recorded
    data.on_segment(_seg(snapshot="stage-0"))
    assert _take(it, 3) == [2, 3, 4]
    data.on_segment(_seg(restore="stage-0"))
    assert _take(it, 3) == [2, 3, 4]
    data.on_segment(_seg(restore="stage-0"))
    assert _take(it, 5) == [2, 3, 4, 5, 6]  # a longer candidate goes on with fresh batches, recorded too
    data.on_segment(_seg(restore="stage-0"))
    assert _take(it, 5) == [2, 3, 4, 5, 6]
    data.on_segment(_seg(phase="train", restore="cand-0-1", replay=False, drop=["stage-0"]))
    assert data.recorded == 0 and data.recording is None
    assert _take(it, 2) == [7, 8]  # training goes on where the data stream was
    assert data.replayed == 11


def test_a_cooldown_probe_goes_on_with_the_recording_so_every_probe_sees_the_same_batches() -> None:
    data = ReplayLoader(list(range(100)))
    it = iter(data)
    data.on_segment(_seg(snapshot="stage-0"))
    assert _take(it, 3) == [0, 1, 2]
    data.on_segment(_seg(shape="linear", lr_end=0.0))  # the probe: no snapshot, no restore
    assert _take(it, 2) == [3, 4]
    data.on_segment(_seg(restore="stage-0"))
    assert _take(it, 3) == [0, 1, 2]
    data.on_segment(_seg(shape="linear", lr_end=0.0))
    assert _take(it, 2) == [3, 4]
    data.on_segment(_seg(phase="train", restore="cand-0-0", replay=False))
    assert _take(it, 1) == [5] and data.recording is None


def test_replay_off_or_another_snapshot_passes_batches_through() -> None:
    data = ReplayLoader(list(range(10)))
    it = iter(data)
    data.on_segment(_seg(snapshot="stage-0", replay=False))
    assert _take(it, 2) == [0, 1] and data.recorded == 0
    data.on_segment(_seg(snapshot="stage-1"))
    _take(it, 2)
    data.on_segment(_seg(restore="stage-0"))  # not the recorded stage
    assert _take(it, 2) == [4, 5] and data.recorded == 0


def test_epochs_and_len_pass_through() -> None:
    data = ReplayLoader([1, 2, 3])
    assert len(data) == 3
    assert list(data) == [1, 2, 3] and list(data) == [1, 2, 3]
    data.on_segment(_seg(snapshot="s"))
    assert list(data) == [1, 2, 3]
    data.on_segment(_seg(restore="s"))
    assert list(data) == [1, 2, 3, 1, 2, 3]  # the replayed batches come first, then the next epoch


def test_max_batches_caps_the_recording_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = ReplayLoader(list(range(100)), max_batches=2)
    it = iter(data)
    data.on_segment(_seg(snapshot="s"))
    assert _take(it, 4) == [0, 1, 2, 3]
    with caplog.at_level(logging.WARNING, logger="lrtune.client"):
        for _ in range(3):
            data.on_segment(_seg(restore="s"))
            _take(it, 4)
    assert data.recorded == 2 and len(caplog.records) == 1


def test_copy_protects_against_reused_buffers() -> None:
    buf = [0]

    def batches():  # type: ignore[no-untyped-def]
        for i in range(10):
            buf[0] = i
            yield buf

    class Loader:
        def __iter__(self):  # type: ignore[no-untyped-def]
            return batches()

    data = ReplayLoader(Loader(), copy=True)
    it = iter(data)
    data.on_segment(_seg(snapshot="s"))
    first = [list(next(it)) for _ in range(3)]
    data.on_segment(_seg(restore="s"))
    assert [list(next(it)) for _ in range(3)] == first == [[0], [1], [2]]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        ReplayLoader(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ReplayLoader([], max_batches=0)
