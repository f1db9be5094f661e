#!/usr/bin/env python3
"""Seeded generator of PostHog-like events for the side-by-side benchmarks.

One stream of events, written twice from the same draw:

  --eddy FILE    eddy NDJSON: {"name", "distinct_id", "timestamp",
                 "properties": {"$current_url", "$pathname", "$user_agent",
                 "duration_ms", "price"?}}
  --peers FILE   the peers' JSON lines (Flink, Bytewax, Pathway), the same
                 values flattened: {"name", "distinct_id", "ts", "url",
                 "pathname", "user_agent", "duration_ms", "price"?}

Either may be omitted. The stream:

  --events N            events in all
  --keys K              distinct_ids, u0 .. u(K-1), each event's drawn uniformly
  --per-key-per-window P
                        events per key per window on average: event time
                        advances K * P / window events per window, so with
                        K = 10,000 and a 1 s window P = 1 is 10,000 events
                        per second of event time and P = 100 is 1,000,000
  --window-ms W         the window that P refers to (default 1000)
  --disorder-ms D       each timestamp is moved back by up to D ms (uniform),
                        so events arrive out of order by up to D ms
  --mix funnel|default  event-name mix (see MIXES)
  --seed S

Prints one JSON line on stdout: what was written and how long it took.
"""

import argparse
import json
import random
import sys
import time

T0 = 1_700_000_000_000

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.2; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.77",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]

# (event name, path template or None, carries a price, weight). "funnel" is
# scripts/bench-patterns' mix: product and other page views, add to cart,
# purchases, autocapture.
MIXES = {
    "funnel": [
        ("$pageview", "/product/%d", False, 30),
        ("$pageview", "/blog/%d", False, 25),
        ("add_to_cart", "/product/%d", True, 12),
        ("purchase", "/checkout/%d", True, 3),
        ("$autocapture", "/product/%d", False, 30),
    ],
    "default": [
        ("$pageview", "/product/%d", False, 35),
        ("$pageview", "/blog/%d", False, 20),
        ("$autocapture", "/product/%d", False, 25),
        ("add_to_cart", "/product/%d", True, 10),
        ("purchase", "/checkout/%d", True, 2),
        ("$pageleave", "/product/%d", False, 8),
    ],
}

CHUNK = 100_000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--per-key-per-window", type=float, default=1.0)
    ap.add_argument("--window-ms", type=int, default=1000)
    ap.add_argument("--disorder-ms", type=int, default=0)
    ap.add_argument("--mix", choices=sorted(MIXES), default="default")
    ap.add_argument("--pages", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--eddy")
    ap.add_argument("--peers")
    a = ap.parse_args()
    for name, v in (("--events", a.events), ("--keys", a.keys), ("--window-ms", a.window_ms), ("--pages", a.pages)):
        if v <= 0:
            sys.exit(f"gen.py: {name} must be positive, not {v}")
    if a.per_key_per_window <= 0:
        sys.exit("gen.py: --per-key-per-window must be positive")
    if a.disorder_ms < 0:
        sys.exit("gen.py: --disorder-ms must not be negative")
    if not a.eddy and not a.peers:
        sys.exit("gen.py: nothing to write: give --eddy FILE and/or --peers FILE")

    started = time.monotonic()
    rng = random.Random(a.seed)
    mix = MIXES[a.mix]
    # Events per millisecond of event time.
    per_ms = a.keys * a.per_key_per_window / a.window_ms
    # Per kind: the parts of both lines that do not depend on the event,
    # with %-slots for the rest (user, timestamp, page, ua, duration[, price]).
    host = "https://shop.example.com"
    kinds = []
    for name, path, priced, _ in mix:
        e_price = ',"price":%d' if priced else ""
        eddy = ('{"name":"' + name + '","distinct_id":"u%d","timestamp":%d,"properties":{"$current_url":"'
                + host + path + '","$pathname":"' + path + '","$user_agent":"%s","duration_ms":%d' + e_price + "}}\n")
        peers = ('{"name":"' + name + '","distinct_id":"u%d","ts":%d,"url":"' + host + path
                 + '","pathname":"' + path + '","user_agent":"%s","duration_ms":%d' + e_price + "}\n")
        kinds.append((eddy, peers, priced))
    weights = [w for *_, w in mix]
    uas = [json.dumps(u)[1:-1] for u in USER_AGENTS]
    ua_weights = [30, 20, 15, 20, 10, 5]

    fe = open(a.eddy, "w", buffering=1 << 20) if a.eddy else None
    fp = open(a.peers, "w", buffering=1 << 20) if a.peers else None
    randrange, choices = rng.randrange, rng.choices
    n_kinds = range(len(kinds))
    bytes_e = bytes_p = 0
    done = 0
    while done < a.events:
        n = min(CHUNK, a.events - done)
        ks = choices(n_kinds, weights=weights, k=n)
        us = choices(uas, weights=ua_weights, k=n)
        users = [randrange(a.keys) for _ in range(n)]
        pages = [randrange(a.pages) for _ in range(n)]
        durs = [randrange(5, 30_000) for _ in range(n)]
        if a.disorder_ms:
            late = [randrange(a.disorder_ms + 1) for _ in range(n)]
        out_e, out_p = [], []
        for j in range(n):
            i = done + j
            ts = T0 + int(i / per_ms)
            if a.disorder_ms:
                ts -= late[j]
            eddy, peers, priced = kinds[ks[j]]
            if priced:
                vals = (users[j], ts, pages[j], pages[j], us[j], durs[j], 5 + (i * 7919) % 495)
            else:
                vals = (users[j], ts, pages[j], pages[j], us[j], durs[j])
            if fe:
                out_e.append(eddy % vals)
            if fp:
                out_p.append(peers % vals)
        if fe:
            s = "".join(out_e)
            bytes_e += len(s)
            fe.write(s)
        if fp:
            s = "".join(out_p)
            bytes_p += len(s)
            fp.write(s)
        done += n
    for f in (fe, fp):
        if f:
            f.close()
    print(json.dumps({
        "events": a.events, "keys": a.keys, "per_key_per_window": a.per_key_per_window,
        "window_ms": a.window_ms, "disorder_ms": a.disorder_ms, "mix": a.mix, "seed": a.seed,
        "event_time_span_ms": int(a.events / per_ms), "eddy_bytes": bytes_e, "peers_bytes": bytes_p,
        "seconds": round(time.monotonic() - started, 2),
    }))


if __name__ == "__main__":
    main()
