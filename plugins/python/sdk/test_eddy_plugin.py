"""Unit tests of the Python SDK's batch handling, run natively:
``python3 -m unittest discover -s plugins/python/sdk`` (scripts/test runs them).

They build columnar batches by hand (wit/types.wit) and check what a
processor sees and what result columns it returns.
"""

import struct
import types
import unittest

import eddy_plugin
from eddy_plugin import DROP, KEEP

ABSENT = 0xFFFF_FFFF_FFFF_FFFF


def make_batch(events):
    """A batch of ``events``: dicts with ``name``, ``distinct_id`` and ``props`` (a list of pairs)."""
    text = bytearray()
    cols = {k: [] for k in ("ids", "names", "timestamps", "distinct_ids", "session_ids", "properties", "keys", "values")}
    kinds = bytearray()

    def span(s):
        data = s.encode()
        start = len(text)
        text.extend(data)
        return (start << 32) | len(data)

    for i, e in enumerate(events):
        props = e.get("props", [])
        cols["properties"].append((len(cols["keys"]) << 32) | len(props))
        for k, v in props:
            cols["keys"].append(span(k))
            if isinstance(v, bool):
                kinds.append(1)
                cols["values"].append(int(v))
            elif isinstance(v, int):
                kinds.append(2)
                cols["values"].append(v & 0xFFFF_FFFF_FFFF_FFFF)
            elif isinstance(v, float):
                kinds.append(3)
                cols["values"].append(struct.unpack("<Q", struct.pack("<d", v))[0])
            elif isinstance(v, str):
                kinds.append(4)
                cols["values"].append(span(v))
            elif v is None:
                kinds.append(0)
                cols["values"].append(0)
            else:
                kinds.append(5)
                cols["values"].append(span(v[0]))  # ("json text",)
        cols["ids"].append(span(f"e{i}"))
        cols["names"].append(span(e.get("name", "$pageview")))
        cols["timestamps"].append(1_700_000_000_000 + i)
        cols["distinct_ids"].append(span(e.get("distinct_id", f"u{i}")))
        cols["session_ids"].append(span(e["session"]) if "session" in e else ABSENT)
    return types.SimpleNamespace(text=bytes(text), kinds=bytes(kinds), **cols)


def edits_of(result):
    """Per event: DROP, KEEP, or the list of (key, kind, value) edits, spans read as text."""
    kinds, args, out = result
    text = bytes(out.text)

    def s(span):
        start = span >> 32
        return text[start : start + (span & 0xFFFF_FFFF)].decode()

    events = []
    for i, kind in enumerate(kinds):
        if kind == 2:
            first, count = args[i] >> 32, args[i] & 0xFFFF_FFFF
            events.append(
                [
                    (s(out.keys[p]), out.kinds[p], s(out.values[p]) if out.kinds[p] in (4, 5) else out.values[p])
                    for p in range(first, first + count)
                ]
            )
        else:
            events.append(kind)
    return events


class Recorder:
    """Calls ``fn(event)`` for each event, records what it returns."""

    def __init__(self, fn):
        self.fn = fn
        self.seen = []

    def process(self, event):
        value, outcome = self.fn(event)
        self.seen.append(value)
        return outcome


class GetTest(unittest.TestCase):
    def test_finds_a_key_wherever_it_is_among_the_properties(self):
        batch = make_batch(
            [
                {"props": [("a", "1"), ("country", "FR")]},
                {"props": [("country", "US"), ("a", "1")]},  # moved: the hint misses
                {"props": [("a", "1")]},  # absent
                {"props": [("countryx", "no"), ("b", "2"), ("country", "JP")]},
                {"props": []},
            ]
        )
        r = Recorder(lambda e: (e.get("country", "-"), KEEP))
        eddy_plugin.run_batch(r, batch)
        self.assertEqual(r.seen, ["FR", "US", "-", "JP", "-"])

    def test_reads_every_kind_and_non_ascii_text(self):
        batch = make_batch(
            [
                {
                    "props": [
                        ("ключ", "значение ✓"),
                        ("n", -5),
                        ("big", 2**62),
                        ("f", 1.25),
                        ("t", True),
                        ("nil", None),
                        ("j", ('{"a":[1,2]}',)),
                    ]
                }
            ]
        )
        keys = ["ключ", "n", "big", "f", "t", "nil", "j", "missing"]
        r = Recorder(lambda e: ([e.get(k) for k in keys], KEEP))
        eddy_plugin.run_batch(r, batch)
        self.assertEqual(r.seen, [["значение ✓", -5, 2**62, 1.25, True, None, {"a": [1, 2]}, None]])

    def test_fields_of_each_event(self):
        batch = make_batch([{"name": "a", "distinct_id": "x", "session": "s"}, {"name": "b", "distinct_id": "y"}])
        r = Recorder(lambda e: ((e.name, e.distinct_id, e.id, e.session_id, e.timestamp), KEEP))
        eddy_plugin.run_batch(r, batch)
        self.assertEqual(r.seen, [("a", "x", "e0", "s", 1_700_000_000_000), ("b", "y", "e1", None, 1_700_000_000_001)])

    def test_sees_its_own_edits_and_only_for_its_event(self):
        batch = make_batch([{"props": [("a", "old")]}, {"props": [("a", "old")]}])

        def fn(e):
            before = e.get("a")
            if e.id == "e0":
                e.set("a", "new")
                after = e.get("a")
                e.remove("a")
                return (before, after, e.get("a", "gone"), e.properties), KEEP
            return (before, e.properties), KEEP

        r = Recorder(fn)
        eddy_plugin.run_batch(r, batch)
        self.assertEqual(r.seen, [("old", "new", "gone", {"a": "old"}), ("old", {"a": "old"})])


class EditTest(unittest.TestCase):
    def test_one_edit_per_key_in_first_set_order_with_the_last_value(self):
        batch = make_batch([{"props": [("a", "1")]}])

        def fn(e):
            e.set("x", 1)
            e.set("y", "é")
            e.set("x", 2.5)
            e.remove("y")
            e.set("z", {"k": [1]})
            e.set("y", "ü")
            e.set("n", None)
            e.set("b", False)
            return None, KEEP

        result = eddy_plugin.run_batch(Recorder(fn), batch)
        self.assertEqual(
            edits_of(result),
            [
                [
                    ("x", 3, struct.unpack("<Q", struct.pack("<d", 2.5))[0]),
                    ("y", 4, "ü"),
                    ("z", 5, '{"k":[1]}'),
                    ("n", 0, 0),
                    ("b", 1, 0),
                ]
            ],
        )

    def test_drop_keep_and_modify_outcomes(self):
        batch = make_batch([{}, {}, {}])

        def fn(e):
            if e.id == "e0":
                e.set("gone", "x")  # dropped with its event
                return None, DROP
            if e.id == "e1":
                return None, KEEP
            e.set("region", "Europe")
            return None, None  # None keeps too

        result = eddy_plugin.run_batch(Recorder(fn), batch)
        self.assertEqual(edits_of(result), [DROP, KEEP, [("region", 4, "Europe")]])

    def test_a_repeated_string_is_written_once(self):
        batch = make_batch([{}, {}, {}])

        def fn(e):
            e.set("region", "Europe")
            return None, KEEP

        kinds, args, out = eddy_plugin.run_batch(Recorder(fn), batch)
        self.assertEqual(bytes(out.text), b"regionEurope")
        self.assertEqual(edits_of((kinds, args, out)), [[("region", 4, "Europe")]] * 3)

    def test_bad_values_and_outcomes_are_errors(self):
        batch = make_batch([{}])
        for value, message in [(2**64, "does not fit in 64 bits"), (float("nan"), "not a finite number")]:
            with self.assertRaisesRegex(ValueError, message):
                eddy_plugin.run_batch(Recorder(lambda e, v=value: (e.set("x", v), KEEP)), batch)
        with self.assertRaisesRegex(ValueError, "return KEEP or DROP"):
            eddy_plugin.run_batch(Recorder(lambda e: (None, 7)), batch)


if __name__ == "__main__":
    unittest.main()
