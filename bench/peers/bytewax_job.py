"""Bytewax (one worker, run_main) on the peers' JSON lines.

  python bytewax_job.py window FILE [--window-ms 1000] [--watermark-ms 5000] [--count]

A tumbling event-time window (EventClock on event time only, waiting
--watermark-ms for late events), count and sum of duration_ms by distinct_id, into a sink that
discards them (and counts them: the count is printed as one JSON line,
{"results": N}).
"""

import argparse
import json
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators import windowing as win
from bytewax.operators.windowing import EventClock, TumblingWindower
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

ap = argparse.ArgumentParser()
ap.add_argument("workload", choices=["window"])
ap.add_argument("file")
ap.add_argument("--window-ms", type=int, default=1000)
ap.add_argument("--watermark-ms", type=int, default=5000)
ap.add_argument("--count", action="store_true")
a = ap.parse_args()

results = 0


class Discard(StatelessSinkPartition):
    def write_batch(self, items):
        global results
        results += len(items)


class NullSink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return Discard()


def fold(acc, e):
    acc[0] += 1
    acc[1] += e["duration_ms"]
    return acc


def merge(x, y):
    return [x[0] + y[0], x[1] + y[1]]


flow = Dataflow("window")
lines = op.input("in", flow, FileSource(a.file, batch_size=10_000))
events = op.map("parse", lines, json.loads)
keyed = op.key_on("key", events, lambda e: e["distinct_id"])
# Event time only: by default the watermark also advances with the system
# clock between a key's events (for live input), which on a file read slower
# or faster than its event time closes windows early and splits them into
# partial results. A constant "now" leaves the watermark at the newest
# timestamp minus --watermark-ms; the end of the file closes the rest.
FIXED_NOW = datetime(2000, 1, 1, tzinfo=timezone.utc)
clock = EventClock(
    lambda e: datetime.fromtimestamp(e["ts"] / 1000, tz=timezone.utc),
    wait_for_system_duration=timedelta(milliseconds=a.watermark_ms),
    now_getter=lambda: FIXED_NOW,
    to_system_utc=lambda _: None,
)
windower = TumblingWindower(
    length=timedelta(milliseconds=a.window_ms),
    align_to=datetime(2023, 1, 1, tzinfo=timezone.utc),
)
out = win.fold_window("agg", keyed, clock, windower, lambda: [0, 0], fold, merge)
op.output("out", out.down, NullSink())
run_main(flow)
print(json.dumps({"results": results}))
