// eddy plugin SDK for JavaScript (componentize-js).
//
// Write an object with `init(config)` returning your state,
// `process(event, state)` returning KEEP or DROP and, optionally,
// `endBatch(state)` (called after each batch), and export what
// `processor()` returns from app.js:
//
//   import { processor, KEEP, DROP } from "./eddy-plugin.js";
//
//   export const { plugin, processing } = processor({
//     name: "tagger",
//     version: "0.1.0",
//     description: "Tags every event with a team",
//     configSchema: { type: "object", properties: { team: { type: "string" } } },
//     init(config) { return { team: config.team ?? "web" }; },
//     process(event, state) { event.set("team", state.team); return KEEP; },
//   });
//
// Pattern plugins export what `patternPlugin()` returns ({ plugin, matching });
// alert plugins what `alertPlugin()` returns ({ plugin, alerting }).
//
// `eddy plugin build` turns the folder into a component (componentize-js,
// world `processor` of eddy's WIT). The SDK turns eddy's columnar batches
// (wit/types.wit) into Event views and collects your edits, so the boundary
// is crossed once per batch. Integers arrive as numbers (BigInt beyond 2^53);
// a whole number you set is stored as an integer, any other number as a float.

import { log as hostLog } from "eddy:plugin/log@0.1.0";
import * as hostMetrics from "eddy:plugin/metrics@0.1.0";
import * as hostState from "eddy:plugin/state@0.1.0";

/** Pass the event on, with any edits made through `set` / `remove`. */
export const KEEP = 0;
/** Remove the event from the stream. */
export const DROP = 1;

const NULL = 0, BOOL = 1, INT = 2, FLOAT = 3, TEXT = 4, JSON_KIND = 5, REMOVE = 6;
const ABSENT = 0xffffffff;
const REMOVED = Symbol("removed");

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// Strings are read from a "binary string" of the batch's text: one UTF-16
// unit per byte, so byte offsets index it directly. Native code builds it
// once per batch; after that finding a key (`startsWith`) and taking a
// value (`substring`) are single native calls instead of loops over bytes
// in the component's interpreter, which has no JIT. windows-1252 maps each
// byte to one unit; where the runtime lacks it, UTF-8 does the same for a
// text that is all ASCII, and other batches are read byte by byte.
const NON_ASCII = /[^\x00-\x7f]/;
const SINGLE_BYTE = (() => {
  try {
    const d = new TextDecoder("windows-1252");
    return d.decode(Uint8Array.of(0x41, 0x80, 0xff)).length === 3 ? d : undefined;
  } catch {
    return undefined;
  }
})();

/** Short ASCII strings built directly (cheaper than TextDecoder here). */
function decode(text, start, len) {
  if (len <= 32) {
    let s = "";
    for (let k = start; k < start + len; k++) {
      const c = text[k];
      if (c >= 0x80) return decoder.decode(text.subarray(start, start + len));
      s += String.fromCharCode(c);
    }
    return s;
  }
  return decoder.decode(text.subarray(start, start + len));
}

// UTF-8 of strings a plugin writes again and again (property names, short
// values such as a region), encoded once; bounded.
const ENCODED = new Map();
const ENCODED_MAX = 4096;
function encode(s) {
  let bytes = ENCODED.get(s);
  if (bytes === undefined) {
    bytes = encoder.encode(s);
    if (s.length <= 64 && ENCODED.size < ENCODED_MAX) ENCODED.set(s, bytes);
  }
  return bytes;
}

// Where each property name was found last: its UTF-8 as a binary string,
// its length in bytes, and its position among the event's properties.
// Events of one source list their properties in the same order, so `get`
// checks that position first and scans only when it misses. Bounded.
const HINTS = new Map();
function hint(key) {
  const bytes = encode(key);
  const ascii = !NON_ASCII.test(key);
  const bin = ascii ? key : SINGLE_BYTE !== undefined ? SINGLE_BYTE.decode(bytes) : undefined;
  const h = { bytes, bin, n: bytes.length, slot: 0 };
  if (HINTS.size < ENCODED_MAX) HINTS.set(key, h);
  return h;
}

// 64-bit columns read as pairs of 32-bit words (little endian), which avoids
// a BigInt per span.
function words(column) {
  return new Uint32Array(column.buffer, column.byteOffset, column.length * 2);
}

class Batch {
  constructor(b) {
    this.text = b.text;
    this.ids = words(b.ids);
    this.names = words(b.names);
    this.distinctIds = words(b.distinctIds);
    this.sessionIds = words(b.sessionIds);
    this.properties = words(b.properties);
    this.keys = words(b.keys);
    this.kinds = b.kinds;
    this.values = b.values;
    this.valueWords = words(b.values);
    this.timestamps = b.timestamps;
    this._bin = null; // not built yet
    this.ascii = false;
  }
  /** The text as a binary string (built on first use), or undefined. */
  bin() {
    if (this._bin === null) {
      const s = decoder.decode(this.text);
      this.ascii = s.length === this.text.length;
      this._bin = this.ascii ? s : SINGLE_BYTE?.decode(this.text);
    }
    return this._bin;
  }
  str(start, len) {
    const bin = this.bin();
    if (bin === undefined) return decode(this.text, start, len);
    const s = bin.substring(start, start + len);
    if (this.ascii || !NON_ASCII.test(s)) return s;
    return decoder.decode(this.text.subarray(start, start + len));
  }
  /** Whether the key of property `p` is the key `h` (see `hint`). */
  isKey(p, h, bin) {
    const keys = this.keys, n = h.n;
    if (keys[2 * p] !== n) return false;
    const s = keys[2 * p + 1];
    if (bin !== undefined && h.bin !== undefined) return bin.startsWith(h.bin, s);
    const text = this.text, kb = h.bytes;
    for (let k = 0; k < n; k++) if (text[s + k] !== kb[k]) return false;
    return true;
  }
  span(col, i) {
    const len = col[2 * i], start = col[2 * i + 1];
    if (len === ABSENT && start === ABSENT) return undefined;
    return this.str(start, len);
  }
  value(p) {
    switch (this.kinds[p]) {
      case TEXT: return this.span(this.valueWords, p);
      case INT: {
        const v = BigInt.asIntN(64, this.values[p]);
        return v >= Number.MIN_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER ? Number(v) : v;
      }
      case BOOL: return this.valueWords[2 * p] !== 0;
      case FLOAT: return new Float64Array(this.values.buffer, this.values.byteOffset + 8 * p, 1)[0];
      case JSON_KIND: return JSON.parse(this.span(this.valueWords, p));
      default: return null;
    }
  }
}

/** The edits made to one event so far, in order (a key may repeat). */
class Edits {
  constructor() {
    this.keys = [];
    this.values = [];
  }
  /** The last value set for `key` (REMOVED if removed), or undefined. */
  find(key) {
    for (let j = this.keys.length - 1; j >= 0; j--) if (this.keys[j] === key) return this.values[j];
    return undefined;
  }
}

/**
 * One event of a batch: read fields and properties, edit properties.
 *
 * A processor's `process` gets a view of the current event; keep values
 * from it, not the view, beyond the call.
 */
export class Event {
  constructor(batch, i, edits) {
    this._b = batch;
    this._i = i;
    this._props = undefined;
    this._edits = edits ?? new Edits();
  }
  get name() { return this._b.span(this._b.names, this._i); }
  get distinctId() { return this._b.span(this._b.distinctIds, this._i); }
  get id() { return this._b.span(this._b.ids, this._i); }
  get sessionId() { return this._b.span(this._b.sessionIds, this._i); }
  /** Event time in milliseconds since the Unix epoch (UTC). */
  get timestamp() { return Number(this._b.timestamps[this._i]); }
  /** The properties as they arrived (read only: edit with set/remove). */
  get properties() {
    if (this._props === undefined) {
      const b = this._b, len = b.properties[2 * this._i], start = b.properties[2 * this._i + 1];
      const props = {};
      for (let p = start; p < start + len; p++) props[b.span(b.keys, p)] = b.value(p);
      this._props = props;
    }
    return this._props;
  }
  /** A property's value (seeing this plugin's own edits), or undefined. */
  get(key) {
    if (this._edits.keys.length !== 0) {
      const v = this._edits.find(key);
      if (v !== undefined) return v === REMOVED ? undefined : v;
    }
    if (this._props !== undefined) return this._props[key];
    // Find the key without decoding every property (most plugins read one
    // or two of an event's many properties), first where it was in the
    // last event. This is the hot path of most plugins.
    const h = HINTS.get(key) ?? hint(key);
    const b = this._b, bin = b.bin(), keys = b.keys;
    const len = b.properties[2 * this._i], start = b.properties[2 * this._i + 1], end = start + len;
    let p = start + h.slot;
    if (!(p < end && keys[2 * p] === h.n && bin !== undefined && bin.startsWith(h.bin, keys[2 * p + 1]))) {
      for (p = start; p < end; p++) if (b.isKey(p, h, bin)) break;
      if (p === end) return undefined;
      h.slot = p - start;
    }
    if (b.ascii && b.kinds[p] === TEXT) {
      // The common case, inline: an ASCII string is its binary string.
      const w = b.valueWords, vlen = w[2 * p], vstart = w[2 * p + 1];
      if (vlen !== ABSENT) return bin.substring(vstart, vstart + vlen);
    }
    return b.value(p);
  }
  /** Set a property: null, boolean, number, BigInt, string, or an object/array (kept as JSON). */
  set(key, value) {
    const e = this._edits;
    e.keys.push(key);
    e.values.push(value);
  }
  /** Remove a property. */
  remove(key) { this.set(key, REMOVED); }
}

// Scratch views to read a float's bits without allocating.
const F64 = new Float64Array(1);
const F64_WORDS = new Uint32Array(F64.buffer);

// A column of u64 built from 32-bit word pairs (low, high): the interpreter
// runs plain numbers much faster than BigInts.
function column(words) {
  const col = new BigUint64Array(words.length / 2);
  new Uint32Array(col.buffer).set(words);
  return col;
}

class Output {
  constructor() {
    this.chunks = [];
    this.size = 0;
    // Each distinct string is written once per batch and every edit points
    // at it: string -> [length, start].
    this.spans = new Map();
    this.keys = []; // word pairs
    this.kinds = [];
    this.values = []; // word pairs
  }
  /** Append `s` to the text (once per batch); push its span's words onto `words`. */
  span(s, words) {
    let span = this.spans.get(s);
    if (span === undefined) {
      const bytes = encode(s);
      span = [bytes.length, this.size];
      this.chunks.push(bytes);
      this.size += bytes.length;
      this.spans.set(s, span);
    }
    words.push(span[0], span[1]);
  }
  edit(key, value) {
    this.span(key, this.keys);
    const v = this.values;
    if (typeof value === "string") { this.kinds.push(TEXT); this.span(value, v); }
    else if (value === REMOVED) { this.kinds.push(REMOVE); v.push(0, 0); }
    else if (value === null || value === undefined) { this.kinds.push(NULL); v.push(0, 0); }
    else if (typeof value === "boolean") { this.kinds.push(BOOL); v.push(value ? 1 : 0, 0); }
    else if (typeof value === "number" && Number.isSafeInteger(value)) {
      this.kinds.push(INT);
      v.push(value >>> 0, Math.floor(value / 0x100000000) >>> 0);
    } else if (typeof value === "number") {
      if (!Number.isFinite(value)) throw new Error(`property ${key}: ${value} is not a finite number`);
      this.kinds.push(FLOAT);
      F64[0] = value;
      v.push(F64_WORDS[0], F64_WORDS[1]);
    } else if (typeof value === "bigint") {
      this.kinds.push(INT);
      const bits = BigInt.asUintN(64, value);
      v.push(Number(bits & 0xffffffffn), Number(bits >> 32n));
    } else { this.kinds.push(JSON_KIND); this.span(JSON.stringify(value), v); }
  }
  /** Write an event's edits: one per key, at the key's first place, with its last value. */
  event(e) {
    const keys = e.keys, values = e.values, m = keys.length;
    if (m === 1) {
      this.edit(keys[0], values[0]);
      return;
    }
    if (m > 8) {
      // Many edits: a map, rather than comparing every pair.
      const last = new Map();
      for (let j = 0; j < m; j++) last.set(keys[j], values[j]);
      for (const [key, value] of last) this.edit(key, value);
      return;
    }
    for (let j = 0; j < m; j++) {
      const key = keys[j];
      let value = values[j], repeated = false;
      for (let k = 0; k < j; k++) if (keys[k] === key) { repeated = true; break; }
      if (repeated) continue;
      for (let k = j + 1; k < m; k++) if (keys[k] === key) value = values[k];
      this.edit(key, value);
    }
  }
  text() {
    const text = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.chunks) { text.set(c, at); at += c.length; }
    return text;
  }
}

/** Run `def.process` over one WIT batch and build the WIT result. */
export function runBatch(def, state, wit) {
  const batch = new Batch(wit);
  const n = wit.names.length;
  const kinds = new Uint8Array(n);
  const args = new BigUint64Array(n);
  const argWords = new Uint32Array(args.buffer);
  const out = new Output();
  // One view for the whole batch, moved from event to event, and one list
  // of edits: this loop runs once per event in an interpreter.
  const edits = new Edits();
  const event = new Event(batch, 0, edits);
  for (let i = 0; i < n; i++) {
    event._i = i;
    event._props = undefined;
    const outcome = def.process(event, state);
    if (outcome === KEEP || outcome === undefined) {
      if (edits.keys.length !== 0) {
        const first = out.kinds.length;
        out.event(edits);
        kinds[i] = 2;
        argWords[2 * i] = out.kinds.length - first;
        argWords[2 * i + 1] = first;
      }
    } else if (outcome === DROP) kinds[i] = DROP;
    else throw new Error(`process() returned ${outcome}; return KEEP or DROP`);
    if (edits.keys.length !== 0) {
      edits.keys.length = 0;
      edits.values.length = 0;
    }
  }
  if (def.endBatch) def.endBatch(state);
  const empty64 = new BigUint64Array(0);
  return {
    outcomeKinds: kinds,
    outcomeArgs: args,
    editKeys: column(out.keys),
    editKinds: Uint8Array.from(out.kinds),
    editValues: column(out.values),
    output: {
      text: out.text(), ids: empty64, names: empty64, timestamps: new BigInt64Array(0),
      distinctIds: empty64, sessionIds: empty64, properties: empty64, keys: empty64,
      kinds: new Uint8Array(0), values: empty64,
    },
  };
}

/** The `plugin` and `processing` exports for a processor definition. */
export function processor(def) {
  let state;
  let configured = false;
  const schema = def.configSchema ?? { type: "object" };
  return {
    plugin: {
      describe() {
        return {
          name: def.name,
          version: def.version ?? "0.0.0",
          description: def.description ?? "",
          configSchema: typeof schema === "string" ? schema : JSON.stringify(schema),
        };
      },
      configure(config) {
        try {
          state = def.init ? def.init(config ? JSON.parse(config) : {}) : undefined;
          configured = true;
        } catch (e) {
          throw String(e?.message ?? e);
        }
      },
    },
    processing: {
      process(batch) {
        if (!configured) throw "process() called before configure()";
        try {
          return runBatch(def, state, batch);
        } catch (e) {
          throw `${e?.name ?? "Error"}: ${e?.message ?? e}`;
        }
      },
    },
  };
}

// Pattern plugins (world `pattern`): a sequence pattern whose conditions
// are JavaScript functions. The host runs the matching; the SDK describes
// the pattern, classifies each batch by calling every step's condition on
// every event, and hands completed matches to `onMatch`:
//
//   import { patternPlugin, Pattern, minutes, REJECT } from "./eddy-plugin.js";
//
//   export const { plugin, matching } = patternPlugin({
//     name: "big-basket",
//     init(config) { return { min: config.min_total ?? 100 }; },
//     pattern: () => Pattern.begin("cart").matching((e) => e.name === "add_to_cart").oneOrMore()
//       .followedBy("purchase").matching((e) => e.name === "purchase")
//       .within(minutes(30)).skip("past-last-event"),
//     onMatch(m, state) {
//       const total = m.sum("cart", "price");
//       return total < state.min ? REJECT : { basket_total: total };
//     },
//   });

/** Returned by `onMatch`: drop the match. */
export const REJECT = Symbol("reject");

/** `n` seconds, in milliseconds (for `Pattern.within`). */
export const seconds = (n) => Math.round(n * 1000);
/** `n` minutes, in milliseconds. */
export const minutes = (n) => Math.round(n * 60000);
/** `n` hours, in milliseconds. */
export const hours = (n) => Math.round(n * 3600000);

const SKIPS = ["no-skip", "to-next", "past-last-event", "to-first", "to-last"];

/** A sequence pattern; methods that shape a step apply to the step added last. */
export class Pattern {
  constructor(name) {
    this.keyPath = "distinct_id";
    this.steps = [];
    this.withinMs = undefined;
    this.withinType = "first-and-last";
    this.skipStrategy = { tag: "no-skip" };
    this._then(name, "relaxed");
  }
  /** A pattern whose first step is `name` (keyed by distinct_id). */
  static begin(name) { return new Pattern(name); }
  _then(name, after) {
    this.steps.push({ name, after, min: 1, max: 1, optional: false, greedy: false,
      inner: "relaxed", cond: undefined, until: undefined });
    return this;
  }
  get _last() { return this.steps[this.steps.length - 1]; }
  /** A step directly after the previous one (strict contiguity). */
  next(name) { return this._then(name, "strict"); }
  /** A step that may come after other events (relaxed contiguity). */
  followedBy(name) { return this._then(name, "relaxed"); }
  /** Like followedBy, every matching event starting an alternative. */
  followedByAny(name) { return this._then(name, "any"); }
  /** The event right after the previous step's must not match this step. */
  notNext(name) { return this._then(name, "not-strict"); }
  /** No event matching this step may come before the next step. */
  notFollowedBy(name) { return this._then(name, "not-relaxed"); }
  /** The step's condition, a function of an Event; ANDed if repeated. */
  matching(cond) {
    const s = this._last, before = s.cond;
    s.cond = before === undefined ? cond : (e) => before(e) && cond(e);
    return this;
  }
  /** Exactly `n` events, or from `n` to `m`. */
  times(n, m = n) { Object.assign(this._last, { min: n, max: m }); return this; }
  /** One event or more. */
  oneOrMore() { return this.timesOrMore(1); }
  /** `n` events or more. */
  timesOrMore(n) { Object.assign(this._last, { min: n, max: undefined }); return this; }
  /** The step may take no event. */
  optional() { this._last.optional = true; return this; }
  /** A looping step takes as many events as it can. */
  greedy() { this._last.greedy = true; return this; }
  /** A looping step's events follow one another directly. */
  consecutive() { this._last.inner = "strict"; return this; }
  /** A looping step matches every combination of its events. */
  allowCombinations() { this._last.inner = "any"; return this; }
  /** A looping step stops at the first event for which `cond` holds. */
  until(cond) { this._last.until = cond; return this; }
  /** The match takes less than `ms` (type: or "previous-and-current"). */
  within(ms, type = "first-and-last") { this.withinMs = ms; this.withinType = type; return this; }
  /** What partial matches are kept per: distinct_id, session_id, properties.x. */
  key(path) { this.keyPath = path; return this; }
  /** After-match skip: no-skip, to-next, past-last-event, to-first/to-last (with `step`). */
  skip(strategy, step) {
    if (!SKIPS.includes(strategy)) throw new Error(`unknown skip strategy ${strategy}; one of ${SKIPS.join(", ")}`);
    this.skipStrategy = step === undefined ? { tag: strategy } : { tag: strategy, val: step };
    return this;
  }
  /** `[steps, until]` bits of the steps whose conditions `event` satisfies. */
  classify(event) {
    let steps = 0, until = 0;
    const n = Math.min(this.steps.length, 32);
    for (let i = 0; i < n; i++) {
      const s = this.steps[i];
      if (s.cond === undefined || s.cond(event)) steps |= 1 << i;
      if (s.until !== undefined && s.until(event)) until |= 1 << i;
    }
    return [steps >>> 0, until >>> 0];
  }
  /** The WIT description (`wit/pattern.wit`). */
  description(wantsMatches) {
    return {
      key: this.keyPath,
      steps: this.steps.map((s) => ({ name: s.name, after: s.after, min: s.min, max: s.max,
        optional: s.optional, greedy: s.greedy, inner: s.inner, hasUntil: s.until !== undefined })),
      withinMs: this.withinMs === undefined ? undefined : BigInt(this.withinMs),
      withinType: this.withinType,
      skip: this.skipStrategy,
      wantsMatches,
    };
  }
}

/** A completed match: `key`, `start`/`end` (ms) and its events per step. */
export class Match {
  constructor(m) {
    this.key = m.key;
    this.start = Number(m.start);
    this.end = Number(m.end);
    this._batch = new Batch(m.events);
    this._steps = new Map(m.steps.map((s) => [s.name, [s.first, s.count]]));
  }
  /** Names of the steps that took events, in pattern order. */
  get steps() { return [...this._steps.keys()]; }
  /** The events step `step` took, in order. */
  events(step) {
    const [first, count] = this._steps.get(step) ?? [0, 0];
    const out = [];
    for (let i = first; i < first + count; i++) out.push(new Event(this._batch, i));
    return out;
  }
  /** The sum of numeric property `key` over `step`'s events. */
  sum(step, key) {
    let total = 0;
    for (const e of this.events(step)) {
      const v = e.get(key);
      if (typeof v === "number") total += v;
    }
    return total;
  }
}

/** The `plugin` and `matching` exports for a pattern definition. */
export function patternPlugin(def) {
  let state, pattern;
  const schema = def.configSchema ?? { type: "object" };
  const build = (config) => {
    state = def.init ? def.init(config) : undefined;
    pattern = def.pattern(state);
  };
  const live = () => { if (pattern === undefined) build({}); };
  return {
    plugin: {
      describe() {
        return {
          name: def.name,
          version: def.version ?? "0.0.0",
          description: def.description ?? "",
          configSchema: typeof schema === "string" ? schema : JSON.stringify(schema),
        };
      },
      configure(config) {
        try {
          build(config ? JSON.parse(config) : {});
        } catch (e) {
          throw String(e?.message ?? e);
        }
      },
    },
    matching: {
      describePattern() {
        live();
        return pattern.description(typeof def.onMatch === "function");
      },
      classify(wit) {
        try {
          live();
          const batch = new Batch(wit), n = wit.timestamps.length, bits = new Array(n);
          for (let i = 0; i < n; i++) {
            const [steps, until] = pattern.classify(new Event(batch, i));
            bits[i] = { steps, until };
          }
          return bits;
        } catch (e) {
          throw `${e?.name ?? "Error"}: ${e?.message ?? e}`;
        }
      },
      onMatch(m) {
        live();
        const verdict = def.onMatch ? def.onMatch(new Match(m), state) : undefined;
        if (verdict === REJECT) return { tag: "reject" };
        if (verdict === undefined || verdict === null || verdict === KEEP) return { tag: "keep", val: undefined };
        return { tag: "keep", val: JSON.stringify(verdict) };
      },
    },
  };
}

// Alert plugins (world `alert`, wit/alert.wit).

/** One alert instance's state now. */
export class Evaluation {
  /**
   * `value` (a finite number), whether the condition is `active`, and
   * optionally `{ labels, severity, annotations }` (labels and annotations
   * as plain objects).
   */
  constructor(value, active, { labels = {}, severity, annotations = {} } = {}) {
    this.value = Number(value);
    this.active = Boolean(active);
    this.labels = labels;
    this.severity = severity;
    this.annotations = annotations;
  }
}

/** The label a `group_by` path becomes: its last segment (`properties.service` -> `service`). */
export function labelName(path) {
  const last = path.slice(path.lastIndexOf(".") + 1);
  let name = last.replace(/[^A-Za-z0-9]/g, "_");
  if (name === "" || /^[0-9]/.test(name)) name = "_" + name;
  return name;
}

/** A value as label text: strings as they are, numbers as JSON writes them, null as "". */
export function labelValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number" && Number.isInteger(v)) return String(v);
  return JSON.stringify(v);
}

function alertValue(v) {
  switch (v.tag) {
    case "null": return null;
    case "integer": {
      const n = Number(v.val);
      return Number.isSafeInteger(n) ? n : v.val;
    }
    case "json": return JSON.parse(v.val);
    default: return v.val;
  }
}

/**
 * One result of one group: `kind` ("early", "final", "correction"),
 * `start`/`end` (ms), `revision`, `group` (path -> value) and `values`
 * (aggregate -> value).
 */
export class WindowResult {
  constructor(raw, groupBy, aggregates) {
    this.kind = raw.kind;
    this.start = Number(raw.start);
    this.end = Number(raw.end);
    this.revision = raw.revision;
    this.groupBy = groupBy;
    this.group = {};
    groupBy.forEach((p, i) => { this.group[p] = raw.group[i] === undefined ? null : alertValue(raw.group[i]); });
    this.values = {};
    aggregates.forEach((a, i) => { this.values[a] = raw.values[i] === undefined ? null : alertValue(raw.values[i]); });
  }
  /** Aggregate `name`'s value. */
  value(name) { return this.values[name]; }
  /** The group as labels: `{ labelName(path): labelValue(value) }`. */
  groupLabels() {
    const labels = {};
    for (const p of this.groupBy) labels[labelName(p)] = labelValue(this.group[p]);
    return labels;
  }
  /** A key naming the group, for the state store. */
  groupKey() { return this.groupBy.map((p) => labelValue(this.group[p])).join("\x1f"); }
}

function evaluationOut(e) {
  if (!(e instanceof Evaluation)) throw new TypeError("evaluations must be Evaluation objects");
  return {
    labels: Object.entries(e.labels).map(([k, v]) => [k, String(v)]),
    value: e.value,
    active: e.active,
    severity: e.severity === undefined || e.severity === null ? undefined : String(e.severity),
    annotations: Object.entries(e.annotations).map(([k, v]) => [k, String(v)]),
  };
}

/**
 * The `plugin` and `alerting` exports for an alert definition: `init(config)`
 * returning your state, `watches(state)` returning `{ windows, patterns }`,
 * and `onWindows({ window, groupBy, aggregates, results }, state)` and/or
 * `onMatches({ pattern, matches }, state)` returning Evaluation lists. Keep
 * baselines in host `state`.
 */
export function alertPlugin(def) {
  let state, built = false;
  const schema = def.configSchema ?? { type: "object" };
  const build = (config) => { state = def.init ? def.init(config) : undefined; built = true; };
  const live = () => { if (!built) build({}); };
  return {
    plugin: {
      describe() {
        return {
          name: def.name,
          version: def.version ?? "0.0.0",
          description: def.description ?? "",
          configSchema: typeof schema === "string" ? schema : JSON.stringify(schema),
        };
      },
      configure(config) {
        try {
          build(config ? JSON.parse(config) : {});
        } catch (e) {
          throw String(e?.message ?? e);
        }
      },
    },
    alerting: {
      watches() {
        live();
        const w = def.watches ? def.watches(state) ?? {} : {};
        return { windows: [...(w.windows ?? [])], patterns: [...(w.patterns ?? [])] };
      },
      evaluate(input) {
        try {
          live();
          let out;
          if (input.tag === "windows") {
            const r = input.val;
            const results = r.results.map((x) => new WindowResult(x, r.groupBy, r.aggregates));
            out = def.onWindows ? def.onWindows({ window: r.window, groupBy: r.groupBy, aggregates: r.aggregates, results }, state) : [];
          } else {
            const m = input.val;
            const matches = m.matches.map((x) => {
              const match = new Match({ key: x.key, start: x.start, end: x.end, events: m.events, steps: x.steps });
              match.kind = x.kind;
              match.payload = x.payload === undefined ? null : JSON.parse(x.payload);
              return match;
            });
            out = def.onMatches ? def.onMatches({ pattern: m.pattern, matches }, state) : [];
          }
          return (out ?? []).map(evaluationOut);
        } catch (e) {
          throw `${e?.name ?? "Error"}: ${e?.message ?? e}`;
        }
      },
    },
  };
}

/** Log through the host: level is "trace", "debug", "info", "warn" or "error". */
export function log(level, message, fields = {}) {
  hostLog(level, message, Object.entries(fields).map(([k, v]) => [k, String(v)]));
}

/** Add to a plugin-defined counter. */
export function counterAdd(name, delta = 1) { hostMetrics.counterAdd(name, BigInt(delta)); }

/** Set a plugin-defined gauge. */
export function gaugeSet(name, value) { hostMetrics.gaugeSet(name, value); }

/** Host state: bytes (Uint8Array) kept by the host across swaps and traps. */
export const state = {
  get: (key) => hostState.get(key),
  set: (key, value) => hostState.set(key, value),
  setIfAbsent: (key, value) => hostState.setIfAbsent(key, value),
  delete: (key) => hostState.delete(key),
};
