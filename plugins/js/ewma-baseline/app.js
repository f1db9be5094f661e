// ewma-baseline: an alert plugin (the JavaScript twin of
// plugins/python/ewma-baseline). Per group of the watched window, an
// exponentially weighted mean and variance of the aggregate, kept in host
// state; each final result is judged against the baseline before it is
// folded in, active when it is more than `k` deviations away.

import { alertPlugin, Evaluation, state } from "./eddy-plugin.js";

const KNOWN = ["window", "aggregate", "alpha", "k", "min_samples", "severity"];

function number(config, key, def, low, high) {
  const v = config[key] ?? def;
  if (typeof v !== "number" || !(v > low && v < high)) {
    throw new Error(`config key '${key}' must be a number between ${low} and ${high} (exclusive), got ${JSON.stringify(v)}`);
  }
  return v;
}

function load(key) {
  const b = state.get(key);
  if (b === undefined || b.length !== 24) return undefined;
  const d = new DataView(b.buffer, b.byteOffset, 24);
  return { mean: d.getFloat64(0, true), variance: d.getFloat64(8, true), n: Number(d.getBigInt64(16, true)) };
}

function store(key, s) {
  const b = new Uint8Array(24);
  const d = new DataView(b.buffer);
  d.setFloat64(0, s.mean, true);
  d.setFloat64(8, s.variance, true);
  d.setBigInt64(16, BigInt(s.n), true);
  state.set(key, b);
}

export const { plugin, alerting } = alertPlugin({
  name: "ewma-baseline",
  version: "1.0.0-js",
  description: "Alert: a window aggregate more than k EWMA standard deviations from its EWMA baseline, per group",
  configSchema: {
    type: "object",
    additionalProperties: false,
    required: ["window", "aggregate"],
    properties: {
      window: { type: "string" }, aggregate: { type: "string" },
      alpha: { type: "number" }, k: { type: "number" }, min_samples: { type: "integer" }, severity: { type: "string" },
    },
  },
  init(config) {
    for (const key of Object.keys(config)) {
      if (!KNOWN.includes(key)) throw new Error(`unknown config key '${key}'; expected one of ${KNOWN.join(", ")}`);
    }
    if ((config.window === undefined) !== (config.aggregate === undefined)) {
      throw new Error(`config key '${config.window === undefined ? "window" : "aggregate"}' is required`);
    }
    const minSamples = config.min_samples ?? 10;
    if (!Number.isInteger(minSamples) || minSamples < 1) {
      throw new Error("config key 'min_samples' must be a whole number of at least 1");
    }
    return {
      window: config.window, aggregate: config.aggregate,
      alpha: number(config, "alpha", 0.1, 0, 1), k: number(config, "k", 3, 0, Infinity),
      minSamples, severity: String(config.severity ?? "warning"),
    };
  },
  watches: (s) => ({ windows: s.window === undefined ? [] : [s.window] }),
  onWindows(batch, s) {
    if (!batch.aggregates.includes(s.aggregate)) {
      throw new Error(`window '${batch.window}' has no aggregate '${s.aggregate}' (it has: ${batch.aggregates.join(", ")})`);
    }
    const out = [];
    for (const r of batch.results) {
      if (r.kind === "early") continue;
      const x = Number(r.value(s.aggregate));
      if (!Number.isFinite(x)) continue;
      const key = `ewma\x1f${s.window}\x1f${s.aggregate}\x1f${r.groupKey()}`;
      const b = load(key) ?? { mean: x, variance: 0, n: 0 };
      if (b.n >= s.minSamples) {
        const std = Math.sqrt(b.variance);
        let z = (x - b.mean) / Math.max(std, 1e-12 * Math.max(Math.abs(b.mean), 1));
        z = Math.max(-1e12, Math.min(1e12, z));
        out.push(new Evaluation(z, Math.abs(z) > s.k, {
          labels: r.groupLabels(),
          severity: s.severity,
          annotations: {
            summary: `${s.aggregate} = ${x} is ${z.toFixed(2)} deviations from its EWMA baseline ${b.mean.toPrecision(4)}`,
            baseline_mean: String(b.mean),
            baseline_std: String(std),
          },
        }));
      }
      if (r.kind === "final") {
        const diff = x - b.mean;
        b.mean += s.alpha * diff;
        b.variance = (1 - s.alpha) * (b.variance + s.alpha * diff * diff);
        b.n += 1;
        store(key, b);
      }
    }
    return out;
  },
});
