"""An outage as a candidate ends: its cooldown probe never runs on weights that have offline steps on them.

A real ``lrtune serve`` (embedded store) is SIGSTOPped just as a candidate whose cooldown probe comes next ends, for
longer than the callback's stall bound, so the worker trains on without a segment; when the service is back it
reports those steps, and the job drops the probe instead of scoring it on other weights.
"""

from __future__ import annotations

import signal
from pathlib import Path

from benchmarks.reliability_faults import probe_after_outage
from tests.client.conftest import one_thread  # noqa: F401 - the same autouse fixture: one torch thread
from tests.reliability.harness import Service, record_result


def test_a_probe_after_an_outage_is_dropped_not_run_on_other_weights(tmp_path: Path) -> None:
    service = Service({"LRTUNE_REDIS_URL": ""}, tmp_path)
    service.start()
    try:
        assert service.proc is not None
        out = probe_after_outage(service.url, service.proc, 2.5)
    finally:
        if service.proc is not None:
            service.proc.send_signal(signal.SIGCONT)
        service.stop()
    assert out["offline_steps_after_the_candidate"] > 0, "the outage happened while training ran"
    assert out["next_segment_after_the_outage"] != "its probe"
    assert out["probes_run_on_other_weights"] == 0
    assert out["steps_run"] == 1500  # and the budget is the user's
    record_result("probe_after_outage", **out)
