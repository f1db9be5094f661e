"""Pathway (one thread) on the peers' JSON lines.

  python pathway_job.py window FILE [--window-ms 1000] [--count]

The file is read in static mode (read once, then the computation ends); a
tumbling window on ts, count and sum of duration_ms by distinct_id
(windowby ... instance=distinct_id), written to pw.io.null. With --count the
results are counted (pw.io.subscribe) and printed as one JSON line,
{"results": N}; otherwise {"results": null}.
"""

import argparse
import json
import os

os.environ.setdefault("PATHWAY_THREADS", "1")
os.environ.setdefault("PATHWAY_DISABLE_TELEMETRY", "1")

import pathway as pw  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("workload", choices=["window"])
ap.add_argument("file")
ap.add_argument("--window-ms", type=int, default=1000)
ap.add_argument("--watermark-ms", type=int, default=5000)  # static mode: every event is on time
ap.add_argument("--count", action="store_true")
a = ap.parse_args()


class Event(pw.Schema):
    distinct_id: str
    ts: int
    duration_ms: int


events = pw.io.jsonlines.read(a.file, schema=Event, mode="static")
result = events.windowby(
    events.ts,
    window=pw.temporal.tumbling(duration=a.window_ms),
    instance=events.distinct_id,
).reduce(
    distinct_id=pw.this._pw_instance,
    window_start=pw.this._pw_window_start,
    n=pw.reducers.count(),
    total=pw.reducers.sum(pw.this.duration_ms),
)
results = 0
if a.count:
    def on_change(key, row, time, is_addition):
        global results
        results += 1 if is_addition else -1

    pw.io.subscribe(result, on_change=on_change)
else:
    results = None
    pw.io.null.write(result)
pw.run(monitoring_level=pw.MonitoringLevel.NONE)
print(json.dumps({"results": results}))
