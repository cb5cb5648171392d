"""A simulated worker as a process of its own, so that a test can SIGKILL it mid-segment.

``python -m tests.reliability.sim_worker --url URL --job ID --worker W --log FILE [--hold N --release FILE]``,
with the job token in ``$LRTUNE_SIM_TOKEN`` (not on the command line). It trains the job to the end; with
``--hold N`` it stops before reporting segment ``N`` until the file ``--release`` exists (a test that never
creates it kills the worker there). Every event goes to the log as one JSON line, flushed at once: ``leased``,
``holding`` (with the segment), ``ack`` (with the report body), ``done``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from tests.reliability.harness import DEADLINE_S, Ack, SimWorker


def _log(out: IO[str], event: str, **data: Any) -> None:
    out.write(json.dumps({"event": event, **data}) + "\n")
    out.flush()
    os.fsync(out.fileno())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--hold", type=int, default=-1)
    parser.add_argument("--release", type=Path)
    args = parser.parse_args()
    with open(args.log, "a") as out:

        def on_ack(ack: Ack) -> None:
            _log(out, "ack", segment_id=ack.segment_id, lease_epoch=ack.lease_epoch, body=ack.body)

        worker = SimWorker(args.url, args.job, os.environ["LRTUNE_SIM_TOKEN"], args.worker, on_ack=on_ack)
        seg = worker.poll(wait_for_lease=True)
        _log(out, "leased", segment=seg)
        while not seg["done"]:
            if seg["segment_id"] == args.hold:
                _log(out, "holding", segment=seg)
                deadline = time.monotonic() + DEADLINE_S
                while not (args.release and args.release.exists()) and time.monotonic() < deadline:
                    time.sleep(0.02)  # "training" until the test lets it go on
            seg = worker.report(seg)
        _log(out, "done", segment=seg)
        worker.close()


if __name__ == "__main__":
    main()
