// {{name}}: an alert plugin. For every final result of the window named by
// `window` (default `errors_per_service`), the aggregate named by
// `aggregate` (default `error_ratio`), per group, active when it is above
// `max` (default 0.05). Keep baselines in host `state`.

import { alertPlugin, Evaluation } from "./eddy-plugin.js";

export const { plugin, alerting } = alertPlugin({
  name: "{{name}}",
  version: "0.1.0",
  description: "Alert: a window aggregate above a threshold, per group",
  configSchema: {
    type: "object",
    additionalProperties: false,
    properties: { window: { type: "string" }, aggregate: { type: "string" }, max: { type: "number" } },
  },
  init(config) {
    for (const key of Object.keys(config)) {
      if (!["window", "aggregate", "max"].includes(key)) {
        throw new Error(`unknown config key \`${key}\`: expected window, aggregate, max`);
      }
    }
    if (config.max !== undefined && typeof config.max !== "number") throw new Error("config key `max` must be a number");
    return {
      window: config.window ?? "errors_per_service",
      aggregate: config.aggregate ?? "error_ratio",
      max: config.max ?? 0.05,
    };
  },
  watches: (s) => ({ windows: [s.window] }),
  onWindows(batch, s) {
    const out = [];
    for (const r of batch.results) {
      const x = r.value(s.aggregate);
      if (r.kind !== "final" || typeof x !== "number") continue;
      out.push(new Evaluation(x, x > s.max, {
        labels: r.groupLabels(),
        severity: "warning",
        annotations: { summary: `${s.aggregate} is ${x}, above ${s.max}` },
      }));
    }
    return out;
  },
});
