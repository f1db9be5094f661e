"""Flink SQL (PyFlink Table API, parallelism 1) on the peers' JSON lines.

  python flink_job.py window  FILE [--window-ms 1000] [--watermark-ms 5000] [--count]
  python flink_job.py funnel  FILE [--watermark-ms 5000] [--count]

window: a tumbling event-time window, COUNT(*) and SUM(duration_ms) by
distinct_id. funnel: MATCH_RECOGNIZE PATTERN (A Y*? B Z*? C) WITHIN 30
minutes, per distinct_id (A a product $pageview, B add_to_cart, C purchase).
Results go to a blackhole sink; with --count they are written to CSV files and
counted instead (a cross-check of the results, not a timing).
Prints one JSON line: {"results": N or null}.
"""

import argparse
import json
import os

from pyflink.table import EnvironmentSettings, TableEnvironment

ap = argparse.ArgumentParser()
ap.add_argument("workload", choices=["window", "funnel"])
ap.add_argument("file")
ap.add_argument("--window-ms", type=int, default=1000)
ap.add_argument("--watermark-ms", type=int, default=5000)
ap.add_argument("--count", action="store_true")
a = ap.parse_args()

env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
cfg = env.get_config()
cfg.set("parallelism.default", "1")
cfg.set("table.exec.resource.default-parallelism", "1")
cfg.set("table.local-time-zone", "UTC")
cfg.set("pipeline.object-reuse", "true")

path = os.path.abspath(a.file)
env.execute_sql(f"""
CREATE TABLE events (
  name STRING,
  distinct_id STRING,
  ts BIGINT,
  url STRING,
  pathname STRING,
  user_agent STRING,
  duration_ms BIGINT,
  price BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '{a.watermark_ms / 1000}' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')
""")

if a.workload == "window":
    query = f"""
SELECT window_start, distinct_id, COUNT(*) AS n, SUM(duration_ms) AS total
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(rt), INTERVAL '{a.window_ms / 1000}' SECOND))
GROUP BY window_start, window_end, distinct_id"""
    sink_columns = "window_start TIMESTAMP(3), distinct_id STRING, n BIGINT, total BIGINT"
else:
    query = """
SELECT distinct_id, start_ts, end_ts
FROM events MATCH_RECOGNIZE (
  PARTITION BY distinct_id
  ORDER BY rt
  MEASURES A.ts AS start_ts, C.ts AS end_ts
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A Y*? B Z*? C) WITHIN INTERVAL '30' MINUTE
  DEFINE
    A AS A.name = '$pageview' AND A.pathname LIKE '%/product/%',
    B AS B.name = 'add_to_cart',
    C AS C.name = 'purchase'
)"""
    sink_columns = "distinct_id STRING, start_ts BIGINT, end_ts BIGINT"

if a.count:
    # Into CSV files in a scratch folder, then count their lines (collecting
    # rows into Python goes one row at a time: minutes for 100,000 rows).
    # Without checkpoints the files stay in progress: count those too.
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix="flink-count-")
    try:
        env.execute_sql(f"CREATE TABLE sink ({sink_columns}) WITH "
                        f"('connector' = 'filesystem', 'path' = '{scratch}', 'format' = 'csv')")
        env.execute_sql(f"INSERT INTO sink {query}").wait()
        n = 0
        for folder, _, files in os.walk(scratch):
            for name in files:
                if not name.endswith(".crc"):
                    with open(os.path.join(folder, name), "rb") as f:
                        n += sum(1 for _ in f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"results": n}))
else:
    env.execute_sql(f"CREATE TABLE sink ({sink_columns}) WITH ('connector' = 'blackhole')")
    env.execute_sql(f"INSERT INTO sink {query}").wait()
    print(json.dumps({"results": None}))
