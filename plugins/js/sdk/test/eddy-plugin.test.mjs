// Unit tests of the JavaScript SDK's batch handling, run in Node:
//   node --import ./plugins/js/sdk/test/host-stub.mjs --test plugins/js/sdk/test/
// (scripts/test runs them). They build columnar batches by hand
// (wit/types.wit) and check what a processor sees and what result columns it
// returns.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runBatch, KEEP, DROP } from "../eddy-plugin.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ABSENT = 0xffffffffffffffffn;

/** A batch of `events`: objects with `name`, `distinctId`, `session` and `props` (pairs). */
function makeBatch(events) {
  const text = [];
  const cols = { ids: [], names: [], distinctIds: [], sessionIds: [], properties: [], keys: [], values: [] };
  const kinds = [];
  const span = (s) => {
    const d = encoder.encode(s), start = text.length;
    text.push(...d);
    return (BigInt(start) << 32n) | BigInt(d.length);
  };
  events.forEach((e, i) => {
    const props = e.props ?? [];
    cols.properties.push((BigInt(cols.keys.length) << 32n) | BigInt(props.length));
    for (const [k, v] of props) {
      cols.keys.push(span(k));
      if (typeof v === "string") { kinds.push(4); cols.values.push(span(v)); }
      else if (typeof v === "boolean") { kinds.push(1); cols.values.push(v ? 1n : 0n); }
      else if (typeof v === "bigint") { kinds.push(2); cols.values.push(BigInt.asUintN(64, v)); }
      else if (Number.isInteger(v)) { kinds.push(2); cols.values.push(BigInt.asUintN(64, BigInt(v))); }
      else if (typeof v === "number") { kinds.push(3); cols.values.push(new BigUint64Array(new Float64Array([v]).buffer)[0]); }
      else if (v === null) { kinds.push(0); cols.values.push(0n); }
      else { kinds.push(5); cols.values.push(span(v.json)); }
    }
    cols.ids.push(span(`e${i}`));
    cols.names.push(span(e.name ?? "$pageview"));
    cols.distinctIds.push(span(e.distinctId ?? `u${i}`));
    cols.sessionIds.push(e.session === undefined ? ABSENT : span(e.session));
  });
  const batch = { text: Uint8Array.from(text), kinds: Uint8Array.from(kinds) };
  batch.timestamps = BigInt64Array.from(events.map((_, i) => 1700000000000n + BigInt(i)));
  for (const [k, v] of Object.entries(cols)) batch[k] = BigUint64Array.from(v);
  return batch;
}

/** Per event: DROP, KEEP, or its edits as [key, kind, value] (spans read as text). */
function editsOf(r) {
  const s = (span) => {
    const start = Number(span >> 32n), len = Number(span & 0xffffffffn);
    return decoder.decode(r.output.text.subarray(start, start + len));
  };
  return [...r.outcomeKinds].map((kind, i) => {
    if (kind !== 2) return kind;
    const first = Number(r.outcomeArgs[i] >> 32n), count = Number(r.outcomeArgs[i] & 0xffffffffn);
    const edits = [];
    for (let p = first; p < first + count; p++) {
      const k = r.editKinds[p];
      edits.push([s(r.editKeys[p]), k, k === 4 || k === 5 ? s(r.editValues[p]) : r.editValues[p]]);
    }
    return edits;
  });
}

/** Runs `fn(event)` on each event; returns what it recorded and the result. */
function run(batch, fn) {
  const seen = [];
  const result = runBatch({ process(e) { const [v, outcome] = fn(e); seen.push(v); return outcome; } }, undefined, batch);
  return { seen, result };
}

test("get finds a key wherever it is among the properties", () => {
  const batch = makeBatch([
    { props: [["a", "1"], ["country", "FR"]] },
    { props: [["country", "US"], ["a", "1"]] }, // moved: the hint misses
    { props: [["a", "1"]] }, // absent
    { props: [["countryx", "no"], ["b", "2"], ["country", "JP"]] },
    { props: [] },
  ]);
  assert.deepEqual(run(batch, (e) => [e.get("country"), KEEP]).seen, ["FR", "US", undefined, "JP", undefined]);
});

for (const [label, extra] of [["an ASCII batch", "plain"], ["a batch with non-ASCII text", "café ✓"]]) {
  test(`get reads every kind, in ${label}`, () => {
    const batch = makeBatch([{
      props: [["title", extra], ["ключ", "значение ✓"], ["n", -5], ["big", 2n ** 62n], ["f", 1.25], ["t", true],
        ["nil", null], ["j", { json: '{"a":[1,2]}' }], ["s", "x"]],
    }]);
    const keys = ["title", "ключ", "n", "big", "f", "t", "nil", "j", "s", "missing"];
    const { seen } = run(batch, (e) => [keys.map((k) => e.get(k)), KEEP]);
    assert.deepEqual(seen, [[extra, "значение ✓", -5, 2n ** 62n, 1.25, true, null, { a: [1, 2] }, "x", undefined]]);
  });
}

test("each event's fields", () => {
  const batch = makeBatch([{ name: "a", distinctId: "x", session: "s" }, { name: "bé", distinctId: "y" }]);
  const { seen } = run(batch, (e) => [[e.name, e.distinctId, e.id, e.sessionId, e.timestamp], KEEP]);
  assert.deepEqual(seen, [["a", "x", "e0", "s", 1700000000000], ["bé", "y", "e1", undefined, 1700000000001]]);
});

test("an event sees its own edits, and only its own", () => {
  const batch = makeBatch([{ props: [["a", "old"]] }, { props: [["a", "old"]] }]);
  const { seen } = run(batch, (e) => {
    const before = e.get("a");
    if (e.id === "e0") {
      e.set("a", "new");
      const after = e.get("a");
      e.remove("a");
      return [[before, after, e.get("a"), e.properties], KEEP];
    }
    return [[before, e.properties], KEEP];
  });
  assert.deepEqual(seen, [["old", "new", undefined, { a: "old" }], ["old", { a: "old" }]]);
});

test("one edit per key, in first-set order, with the last value", () => {
  for (const extra of [0, 9]) { // few edits, and more than the pairwise check handles
    const { result } = run(makeBatch([{}]), (e) => {
      e.set("x", 1); e.set("y", "é"); e.set("x", 2.5); e.remove("y"); e.set("z", { k: [1] });
      e.set("y", "ü"); e.set("n", null); e.set("b", false);
      for (let k = 0; k < extra; k++) e.set(`k${k}`, k);
      return [null, KEEP];
    });
    const bits = new BigUint64Array(new Float64Array([2.5]).buffer)[0];
    const expected = [["x", 3, bits], ["y", 4, "ü"], ["z", 5, '{"k":[1]}'], ["n", 0, 0n], ["b", 1, 0n]];
    for (let k = 0; k < extra; k++) expected.push([`k${k}`, 2, BigInt(k)]);
    assert.deepEqual(editsOf(result), [expected]);
  }
});

test("drop, keep and modify outcomes", () => {
  const { result } = run(makeBatch([{}, {}, {}]), (e) => {
    if (e.id === "e0") { e.set("gone", "x"); return [null, DROP]; } // dropped with its event
    if (e.id === "e1") return [null, KEEP];
    e.set("region", "Europe");
    return [null, undefined]; // undefined keeps too
  });
  assert.deepEqual(editsOf(result), [DROP, KEEP, [["region", 4, "Europe"]]]);
});

test("a repeated string is written once", () => {
  const { result } = run(makeBatch([{}, {}, {}]), (e) => { e.set("region", "Europe"); return [null, KEEP]; });
  assert.equal(decoder.decode(result.output.text), "regionEurope");
  assert.deepEqual(editsOf(result), Array(3).fill([["region", 4, "Europe"]]));
});

test("bad values and outcomes are errors", () => {
  assert.throws(() => run(makeBatch([{}]), (e) => { e.set("x", NaN); return [null, KEEP]; }), /not a finite number/);
  assert.throws(() => run(makeBatch([{}]), () => [null, 7]), /return KEEP or DROP/);
});
