// sampler: keeps a deterministic fraction of users.
//
// Each event's distinct_id is hashed (FNV-1a, 32 bits, over its UTF-8
// bytes); a user is in the sample when hash % 10000 < rate * 10000, so a
// user's events are all kept or all dropped, on every run and every
// instance. Events named in `always_keep` are never sampled out. Kept events
// that were subject to sampling carry `$sample_rate`, so counts can be
// scaled back up downstream.

import { processor, KEEP, DROP } from "./eddy-plugin.js";

const encoder = new TextEncoder();
const KEYS = ["rate", "always_keep", "property"];

/** FNV-1a over the UTF-8 bytes of `s`, as an unsigned 32-bit integer. */
export function fnv1a(s) {
  // An ASCII string's UTF-16 units are its UTF-8 bytes: hash them without
  // encoding (an indexed loop; the component's interpreter has no JIT).
  let h = 0x811c9dc5;
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c >= 0x80) return fnv1aBytes(encoder.encode(s));
    h = Math.imul(h ^ c, 0x01000193);
  }
  return h >>> 0;
}

function fnv1aBytes(bytes) {
  let h = 0x811c9dc5;
  for (let k = 0; k < bytes.length; k++) h = Math.imul(h ^ bytes[k], 0x01000193);
  return h >>> 0;
}

export const { plugin, processing } = processor({
  name: "sampler",
  version: "1.0.0",
  description: "Keeps a deterministic sample of users (by hashing distinct_id)",
  configSchema: {
    type: "object",
    additionalProperties: false,
    properties: {
      rate: { type: "number", minimum: 0, maximum: 1, description: "fraction of users kept" },
      always_keep: { type: "array", items: { type: "string" }, description: "event names never sampled out" },
      property: { type: "string", description: "property set to the rate on sampled events" },
    },
  },
  init(config) {
    for (const key of Object.keys(config)) {
      if (!KEYS.includes(key)) throw new Error(`unknown config key \`${key}\`: expected rate, always_keep, property`);
    }
    const rate = config.rate ?? 0.1;
    if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) {
      throw new Error(`\`rate\` must be a number between 0 and 1, got ${JSON.stringify(rate)}`);
    }
    return {
      rate,
      threshold: Math.round(rate * 10000),
      alwaysKeep: new Set(config.always_keep ?? []),
      property: config.property ?? "$sample_rate",
    };
  },
  process(event, cfg) {
    if (cfg.alwaysKeep.has(event.name)) return KEEP;
    if (fnv1a(event.distinctId) % 10000 >= cfg.threshold) return DROP;
    event.set(cfg.property, cfg.rate);
    return KEEP;
  },
});
