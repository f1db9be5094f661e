"""eddy plugin SDK for Python (componentize-py).

Write a class with ``__init__(self, config: dict)`` and
``process(self, event) -> outcome`` (and, optionally, ``end_batch(self)``,
called after each batch), then export it from ``app.py``::

    import eddy_plugin
    from eddy_plugin import KEEP, DROP

    class Tagger:
        name = "tagger"
        version = "0.1.0"
        description = "Tags every event with a team"
        config_schema = {"type": "object", "properties": {"team": {"type": "string"}}}

        def __init__(self, config):
            self.team = config.get("team", "web")

        def process(self, event):
            event.set("team", self.team)
            return KEEP

    Plugin, Processing = eddy_plugin.processor(Tagger)

``eddy plugin build`` turns the folder into a component (componentize-py,
world ``processor`` of eddy's WIT). The SDK turns eddy's columnar batches
(``wit/types.wit``) into :class:`Event` views and collects your edits, so the
boundary is crossed once per batch.

Pattern plugins (world ``pattern``): build a :class:`Pattern` with
``Pattern.begin(..)`` and export with ``Plugin, Matching = pattern_plugin(cls)``.

Alert plugins (world ``alert``): a class with ``watches()``, ``on_windows(results)``
and/or ``on_matches(matches)`` returning :class:`Evaluation` lists, exported with
``Plugin, Alerting = alert_plugin(cls)``.

Host services: :func:`log`, :mod:`state` (``state_get``/``state_set``...) and
:func:`counter_add`/:func:`gauge_set`. They are only there inside eddy.
"""

import json
import struct
import sys

# The bindings componentize-py generates. Imported here, at build time:
# the component has no file system, so an `import` at run time traps.
try:
    from componentize_py_types import Err
    from wit_world import exports as _exports
    from wit_world.exports import plugin as _plugin_types
    from wit_world.imports import log as _log
    from wit_world.imports import metrics as _metrics
    from wit_world.imports import state as _state
    from wit_world.imports import types as _wit
except ImportError:  # plain Python (an editor, a unit test): no host
    _exports = None

KEEP = 0
"""Pass the event on (with any edits made through ``set``/``remove``)."""
DROP = 1
"""Remove the event from the stream."""

_ABSENT = 0xFFFF_FFFF_FFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
# Value kinds of wit/types.wit.
_NULL, _BOOL, _INT, _FLOAT, _TEXT, _JSON, _REMOVE = 0, 1, 2, 3, 4, 5, 6
_MISSING = object()
# Where each property name was found last: name -> [UTF-8 bytes, length,
# position among the event's properties]. Events of one source list their
# properties in the same order, so `get` checks that position first and
# scans only when it misses. Bounded: a plugin reading computed names would
# otherwise grow it forever.
_HINTS = {}
_HINTS_MAX = 4096


def _hint(key):
    hint = [key.encode(), 0, 0]
    hint[1] = len(hint[0])
    if len(_HINTS) < _HINTS_MAX:
        _HINTS[key] = hint
    return hint


class Event:
    """One event of a batch: read fields and properties, edit properties.

    A processor's ``process`` gets a view of the current event; keep what you
    need from it (values, not the view) beyond the call.
    """

    __slots__ = ("_batch", "_text", "_i", "_props", "_edits")

    def __init__(self, batch, text, i):
        self._batch = batch
        self._text = text
        self._i = i
        self._props = None
        self._edits = None

    def _span(self, span):
        if span == _ABSENT:
            return None
        start = span >> 32
        return self._text[start : start + (span & 0xFFFF_FFFF)].decode()

    @property
    def name(self):
        """The event name, e.g. ``$pageview``."""
        return self._span(self._batch.names[self._i])

    @property
    def distinct_id(self):
        """The user the event belongs to."""
        return self._span(self._batch.distinct_ids[self._i])

    @property
    def id(self):
        """The event id."""
        return self._span(self._batch.ids[self._i])

    @property
    def session_id(self):
        """The session id, or None."""
        return self._span(self._batch.session_ids[self._i])

    @property
    def timestamp(self):
        """Event time in milliseconds since the Unix epoch (UTC)."""
        return self._batch.timestamps[self._i]

    @property
    def properties(self):
        """The properties as they arrived (a dict; do not edit it, use ``set``)."""
        if self._props is None:
            b = self._batch
            r = b.properties[self._i]
            start = r >> 32
            props = {}
            for p in range(start, start + (r & 0xFFFF_FFFF)):
                props[self._span(b.keys[p])] = _decode(self, b.kinds[p], b.values[p])
            self._props = props
        return self._props

    def get(self, key, default=None):
        """A property's value, seeing this plugin's own edits."""
        edits = self._edits
        if edits is not None and key in edits:
            v = edits[key]
            return default if v is _MISSING else v
        if self._props is not None:
            return self._props.get(key, default)
        # Find the key by its bytes rather than decoding every property
        # (most plugins read one or two of an event's many properties),
        # first where it was in the last event. This is the hot path of
        # most plugins: it is written for CPython's interpreter.
        hint = _HINTS.get(key)
        if hint is None:
            hint = _hint(key)
        kb, n, slot = hint
        b = self._batch
        text = self._text
        keys = b.keys
        r = b.properties[self._i]
        start = r >> 32
        end = start + (r & 0xFFFF_FFFF)
        p = start + slot
        if p >= end or keys[p] & 0xFFFF_FFFF != n or not text.startswith(kb, keys[p] >> 32):
            for p in range(start, end):
                span = keys[p]
                if span & 0xFFFF_FFFF == n and text.startswith(kb, span >> 32):
                    hint[2] = p - start
                    break
            else:
                return default
        bits = b.values[p]
        if b.kinds[p] == _TEXT and bits != _ABSENT:
            s = bits >> 32
            return text[s : s + (bits & 0xFFFF_FFFF)].decode()
        return _decode(self, b.kinds[p], bits)

    def set(self, key, value):
        """Set a property: None, bool, int, float, str, or a dict/list (kept as JSON)."""
        edits = self._edits
        if edits is None:
            self._edits = {key: value}
        else:
            edits[key] = value

    def remove(self, key):
        """Remove a property."""
        self.set(key, _MISSING)


def _decode(event, kind, bits):
    if kind == _TEXT:
        return event._span(bits)
    if kind == _INT:
        return bits - (1 << 64) if bits >> 63 else bits
    if kind == _BOOL:
        return bits != 0
    if kind == _FLOAT:
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    if kind == _JSON:
        return json.loads(event._span(bits))
    return None


class _Output:
    """The text and edit columns of a result.

    Each distinct string (a property name, a value such as a region) is
    written to the text once per batch and every edit points at it.
    """

    def __init__(self):
        self.text = bytearray()
        self.spans = {}
        self.keys = []
        self.kinds = bytearray()
        self.values = []

    def span(self, s):
        span = self.spans.get(s)
        if span is None:
            data = s.encode()
            start = len(self.text)
            self.text += data
            span = self.spans[s] = (start << 32) | len(data)
        return span

    def edit(self, key, value):
        self.keys.append(self.span(key))
        if type(value) is str:
            kind, bits = _TEXT, self.span(value)
        elif value is _MISSING:
            kind, bits = _REMOVE, 0
        elif value is None:
            kind, bits = _NULL, 0
        elif value is True or value is False:
            kind, bits = _BOOL, int(value)
        elif isinstance(value, int):
            if not -(1 << 63) <= value < (1 << 63):
                raise ValueError(f"property {key!r}: integer {value} does not fit in 64 bits")
            kind, bits = _INT, value & _U64
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"property {key!r}: {value} is not a finite number")
            kind, bits = _FLOAT, struct.unpack("<Q", struct.pack("<d", value))[0]
        elif isinstance(value, str):
            kind, bits = _TEXT, self.span(value)
        else:
            kind, bits = _JSON, self.span(json.dumps(value, separators=(",", ":")))
        self.kinds.append(kind)
        self.values.append(bits)


def run_batch(instance, batch):
    """Run ``instance.process`` over a batch; return the result's columns.

    Returns ``(outcome_kinds, outcome_args, output)``; used by the exported
    ``process`` below and usable from native tests with a hand-made batch.
    """
    text = bytes(batch.text)
    n = len(batch.names)
    kinds = bytearray(n)
    args = [0] * n
    out = _Output()
    edit = out.edit
    spans = out.spans
    span = out.span
    edit_keys = out.keys
    edit_kinds = out.kinds
    edit_values = out.values
    process = instance.process
    # One view for the whole batch, moved from event to event. This loop
    # runs once per event in an interpreter: it allocates nothing an event
    # does not ask for and writes the common edit (a string value under a
    # name already written) without a call.
    event = Event(batch, text, 0)
    for i in range(n):
        event._i = i
        outcome = process(event)
        edits = event._edits
        if edits is not None:
            event._edits = None
        event._props = None
        if outcome == KEEP or outcome is None:
            if edits:
                first = len(edit_keys)
                for key, value in edits.items():
                    if type(value) is str:
                        k = spans.get(key)
                        v = spans.get(value)
                        if k is None or v is None:
                            k = span(key)
                            v = span(value)
                        edit_keys.append(k)
                        edit_kinds.append(_TEXT)
                        edit_values.append(v)
                    else:
                        edit(key, value)
                kinds[i] = 2
                args[i] = (first << 32) | (len(edit_keys) - first)
        elif outcome == DROP:
            kinds[i] = DROP
        else:
            raise ValueError(f"process() returned {outcome!r}; return KEEP or DROP")
    end = getattr(instance, "end_batch", None)
    if end is not None:
        end()
    return kinds, args, out


def processor(cls):
    """Export ``cls`` as this component's processor: ``Plugin, Processing = processor(cls)``."""
    if _exports is None:
        raise ImportError("eddy_plugin.processor() only works inside a component built by componentize-py")
    holder = {}
    # Built with stubbed WASI, the component has no console: print() would
    # trap. Send it to the host log instead.
    sys.stdout = sys.stderr = _LogWriter()

    class Plugin(_exports.Plugin):
        def describe(self):
            schema = getattr(cls, "config_schema", {"type": "object"})
            if not isinstance(schema, str):
                schema = json.dumps(schema)
            return _plugin_types.Info(
                getattr(cls, "name", cls.__name__),
                getattr(cls, "version", "0.0.0"),
                getattr(cls, "description", (cls.__doc__ or "").strip()),
                schema,
            )

        def configure(self, config):
            try:
                holder["instance"] = cls(json.loads(config) if config else {})
            except Exception as e:  # the host reports it, naming the stage
                raise Err(str(e) or type(e).__name__)

    class Processing(_exports.Processing):
        def process(self, batch):
            instance = holder.get("instance")
            if instance is None:
                raise Err("process() called before configure()")
            try:
                kinds, args, out = run_batch(instance, batch)
            except Exception as e:
                raise Err(f"{type(e).__name__}: {e}")
            empty = _wit.Batch(bytes(out.text), [], [], [], [], [], [], [], b"", [])
            return _wit.Processed(bytes(kinds), args, out.keys, bytes(out.kinds), out.values, empty)

    return Plugin, Processing


# Pattern plugins (the `pattern` world): a sequence pattern whose
# conditions are Python functions. The host runs the matching; the SDK
# describes the pattern, classifies each batch by calling every step's
# condition on every event, and hands completed matches to ``on_match``.

REJECT = object()
"""Returned by ``on_match``: drop the match."""

_CONTIGUITY = ("strict", "relaxed", "any", "not_strict", "not_relaxed")
_SKIPS = ("no_skip", "to_next", "past_last_event", "to_first", "to_last")


def seconds(n):
    """``n`` seconds, in milliseconds (for ``Pattern.within``)."""
    return int(n * 1000)


def minutes(n):
    """``n`` minutes, in milliseconds."""
    return int(n * 60_000)


def hours(n):
    """``n`` hours, in milliseconds."""
    return int(n * 3_600_000)


class _Step:
    __slots__ = ("name", "after", "min", "max", "optional", "greedy", "inner", "cond", "until")

    def __init__(self, name, after):
        self.name = name
        self.after = after
        self.min = 1
        self.max = 1
        self.optional = False
        self.greedy = False
        self.inner = "relaxed"
        self.cond = None
        self.until = None


class Pattern:
    """A sequence pattern, built FlinkCEP-style::

        Pattern.begin("cart").matching(lambda e: e.name == "add_to_cart").one_or_more()
            .followed_by("purchase").matching(lambda e: e.name == "purchase")
            .within(minutes(30)).skip("past_last_event")

    Methods that shape a step apply to the step added last.
    """

    def __init__(self, name):
        self.key_path = "distinct_id"
        self.steps = [_Step(name, "relaxed")]
        self.within_ms = None
        self.within_kind = "first_and_last"
        self.skip_strategy = ("no_skip", None)

    @staticmethod
    def begin(name):
        """A pattern whose first step is ``name`` (keyed by distinct_id)."""
        return Pattern(name)

    def _then(self, name, after):
        self.steps.append(_Step(name, after))
        return self

    def next(self, name):
        """A step directly after the previous one (strict contiguity)."""
        return self._then(name, "strict")

    def followed_by(self, name):
        """A step that may come after other events (relaxed contiguity)."""
        return self._then(name, "relaxed")

    def followed_by_any(self, name):
        """Like ``followed_by``, every matching event starting an alternative."""
        return self._then(name, "any")

    def not_next(self, name):
        """The event right after the previous step's must not match this step."""
        return self._then(name, "not_strict")

    def not_followed_by(self, name):
        """No event matching this step may come before the next step."""
        return self._then(name, "not_relaxed")

    def matching(self, condition):
        """The step's condition, a function of an :class:`Event`; ANDed if repeated."""
        step = self.steps[-1]
        before = step.cond
        step.cond = condition if before is None else (lambda e: before(e) and condition(e))
        return self

    def times(self, n, m=None):
        """Exactly ``n`` events, or from ``n`` to ``m``."""
        step = self.steps[-1]
        step.min, step.max = n, n if m is None else m
        return self

    def one_or_more(self):
        """One event or more."""
        return self.times_or_more(1)

    def times_or_more(self, n):
        """``n`` events or more."""
        step = self.steps[-1]
        step.min, step.max = n, None
        return self

    def optional(self):
        """The step may take no event."""
        self.steps[-1].optional = True
        return self

    def greedy(self):
        """A looping step takes as many events as it can."""
        self.steps[-1].greedy = True
        return self

    def consecutive(self):
        """A looping step's events follow one another directly."""
        self.steps[-1].inner = "strict"
        return self

    def allow_combinations(self):
        """A looping step matches every combination of its events."""
        self.steps[-1].inner = "any"
        return self

    def until(self, condition):
        """A looping step stops at the first event for which ``condition`` holds."""
        self.steps[-1].until = condition
        return self

    def within(self, ms, kind="first_and_last"):
        """The match takes less than ``ms`` (``kind``: or "previous_and_current")."""
        self.within_ms = int(ms)
        self.within_kind = kind
        return self

    def key(self, path):
        """What partial matches are kept per: distinct_id, session_id, properties.x."""
        self.key_path = path
        return self

    def skip(self, strategy, step=None):
        """After-match skip: no_skip, to_next, past_last_event, to_first/to_last (with ``step``)."""
        if strategy not in _SKIPS:
            raise ValueError(f"unknown skip strategy {strategy!r}; one of {', '.join(_SKIPS)}")
        self.skip_strategy = (strategy, step)
        return self

    def classify(self, event):
        """``(steps, until)`` bits of the steps whose conditions ``event`` satisfies."""
        steps = until = 0
        for i, s in enumerate(self.steps[:32]):
            if s.cond is None or s.cond(event):
                steps |= 1 << i
            if s.until is not None and s.until(event):
                until |= 1 << i
        return steps, until


class Match:
    """A completed match: ``key``, ``start``/``end`` (ms) and its events per step."""

    def __init__(self, key, start, end, batch, steps):
        self.key = key
        self.start = start
        self.end = end
        self._batch = batch
        self._text = bytes(batch.text)
        self._steps = {s.name: (s.first, s.count) for s in steps}

    @property
    def steps(self):
        """Names of the steps that took events, in pattern order."""
        return list(self._steps)

    def events(self, step):
        """The events step ``step`` took, in order."""
        first, count = self._steps.get(step, (0, 0))
        return [Event(self._batch, self._text, i) for i in range(first, first + count)]

    def sum(self, step, key):
        """The sum of numeric property ``key`` over ``step``'s events."""
        total = 0
        for e in self.events(step):
            v = e.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total += v
        return total


def pattern_plugin(cls):
    """Export ``cls`` as this component's pattern: ``Plugin, Matching = pattern_plugin(cls)``.

    ``cls(config)`` builds an instance; ``instance.pattern()`` returns a
    :class:`Pattern` whose structure must not depend on the configuration
    (the host reads it at load time, from an instance built with ``{}``);
    an optional ``instance.on_match(match)`` returns None (keep), a dict
    (keep, with that JSON payload) or ``REJECT``.
    """
    if _exports is None:
        raise ImportError("eddy_plugin.pattern_plugin() only works inside a component built by componentize-py")
    from wit_world.exports import matching as _m

    holder = {}
    sys.stdout = sys.stderr = _LogWriter()
    wants = callable(getattr(cls, "on_match", None))

    def live():
        if "instance" not in holder:
            instance = cls({})
            holder["instance"], holder["pattern"] = instance, instance.pattern()
        return holder["instance"], holder["pattern"]

    class Plugin(_exports.Plugin):
        def describe(self):
            schema = getattr(cls, "config_schema", {"type": "object"})
            if not isinstance(schema, str):
                schema = json.dumps(schema)
            return _plugin_types.Info(
                getattr(cls, "name", cls.__name__),
                getattr(cls, "version", "0.0.0"),
                getattr(cls, "description", (cls.__doc__ or "").strip()),
                schema,
            )

        def configure(self, config):
            try:
                instance = cls(json.loads(config) if config else {})
                holder["instance"], holder["pattern"] = instance, instance.pattern()
            except Exception as e:
                raise Err(str(e) or type(e).__name__)

    contiguity = {
        "strict": _m.Contiguity.STRICT,
        "relaxed": _m.Contiguity.RELAXED,
        "any": _m.Contiguity.ANY,
        "not_strict": _m.Contiguity.NOT_STRICT,
        "not_relaxed": _m.Contiguity.NOT_RELAXED,
    }
    inner = {
        "strict": _m.InnerContiguity.STRICT,
        "relaxed": _m.InnerContiguity.RELAXED,
        "any": _m.InnerContiguity.ANY,
    }

    def skip(strategy, step):
        if strategy == "to_next":
            return _m.SkipStrategy_ToNext()
        if strategy == "past_last_event":
            return _m.SkipStrategy_PastLastEvent()
        if strategy == "to_first":
            return _m.SkipStrategy_ToFirst(step)
        if strategy == "to_last":
            return _m.SkipStrategy_ToLast(step)
        return _m.SkipStrategy_NoSkip()

    class Matching(_exports.Matching):
        def describe_pattern(self):
            _, p = live()
            steps = [
                _m.StepDescription(
                    s.name, contiguity[s.after], s.min, s.max, s.optional, s.greedy,
                    inner[s.inner], s.until is not None,
                )
                for s in p.steps
            ]
            within = (
                _m.WithinType.PREVIOUS_AND_CURRENT
                if p.within_kind == "previous_and_current"
                else _m.WithinType.FIRST_AND_LAST
            )
            return _m.PatternDescription(
                p.key_path, steps, p.within_ms, within, skip(*p.skip_strategy), wants
            )

        def classify(self, batch):
            try:
                _, p = live()
                text = bytes(batch.text)
                return [
                    _m.ConditionBits(*p.classify(Event(batch, text, i)))
                    for i in range(len(batch.names))
                ]
            except Exception as e:
                raise Err(f"{type(e).__name__}: {e}")

        def on_match(self, m):
            instance, _ = live()
            verdict = instance.on_match(Match(m.key, m.start, m.end, m.events, m.steps))
            if verdict is REJECT:
                return _m.MatchVerdict_Reject()
            if verdict is None or verdict is KEEP:
                return _m.MatchVerdict_Keep(None)
            return _m.MatchVerdict_Keep(json.dumps(verdict, separators=(",", ":")))

    return Plugin, Matching


# Alert plugins (world ``alert``, wit/alert.wit).


class Evaluation:
    """One alert instance's state now: ``value``, whether the condition is ``active``,
    its ``labels`` (dict), optional ``severity`` and ``annotations`` (dict)."""

    __slots__ = ("value", "active", "labels", "severity", "annotations")

    def __init__(self, value, active, labels=None, severity=None, annotations=None):
        self.value = float(value)
        self.active = bool(active)
        self.labels = dict(labels or {})
        self.severity = severity
        self.annotations = dict(annotations or {})

    def __repr__(self):
        return f"Evaluation({self.value!r}, {self.active!r}, {self.labels!r}, {self.severity!r})"


def label_name(path):
    """The label a ``group_by`` path becomes: its last segment, ``properties.service`` -> ``service``."""
    last = path.rsplit(".", 1)[-1]
    name = "".join(c if (c.isascii() and c.isalnum()) else "_" for c in last)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def label_value(v):
    """A value as label text: strings as they are, numbers as JSON writes them, None as ""."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


class WindowResult:
    """One result of one group: ``kind`` ("early", "final", "correction"), ``start``/``end`` (ms),
    ``revision``, ``group`` (dict path -> value) and ``values`` (dict aggregate -> value)."""

    __slots__ = ("kind", "start", "end", "revision", "group", "values", "_group_by")

    def __init__(self, kind, start, end, revision, group, values, group_by):
        self.kind, self.start, self.end, self.revision = kind, start, end, revision
        self.group, self.values, self._group_by = group, values, group_by

    def value(self, name, default=None):
        """Aggregate ``name``'s value."""
        return self.values.get(name, default)

    def group_labels(self):
        """The group as labels: ``{label_name(path): label_value(value)}``."""
        return {label_name(p): label_value(self.group.get(p)) for p in self._group_by}

    def group_key(self):
        """A key naming the group, for the state store."""
        return "\x1f".join(label_value(self.group.get(p)) for p in self._group_by)


class WindowResults:
    """A batch of results of one window: ``window``, ``group_by``, ``aggregates``, ``results``."""

    def __init__(self, window, group_by, aggregates, results):
        self.window, self.group_by, self.aggregates, self.results = window, group_by, aggregates, results


class PatternMatches:
    """A batch of results of one pattern: ``pattern`` and ``matches``, each a :class:`Match`
    with ``kind`` ("match" or "timeout") and ``payload`` (dict or None) besides the usual."""

    def __init__(self, pattern, matches):
        self.pattern, self.matches = pattern, matches


def _alert_value(v):
    """A WIT ``value`` as a Python value (JSON text parsed)."""
    value = getattr(v, "value", None)
    if type(v).__name__ == "Value_Json":
        return json.loads(value)
    return value


def alert_plugin(cls):
    """Export ``cls`` as this component's alert plugin: ``Plugin, Alerting = alert_plugin(cls)``.

    ``cls(config)`` builds an instance; ``instance.watches()`` returns
    ``{"windows": [...], "patterns": [...]}``; ``instance.on_windows(results)``
    (a :class:`WindowResults`) and ``instance.on_matches(matches)`` (a
    :class:`PatternMatches`) return lists of :class:`Evaluation`. Keep
    baselines in host state (:func:`state_get` / :func:`state_set`).
    """
    if _exports is None:
        raise ImportError("eddy_plugin.alert_plugin() only works inside a component built by componentize-py")
    from wit_world.exports import alerting as _a

    holder = {}
    sys.stdout = sys.stderr = _LogWriter()
    kinds = {
        _a.ResultKind.EARLY: "early",
        _a.ResultKind.FINAL: "final",
        _a.ResultKind.CORRECTION: "correction",
    }

    def live():
        if "instance" not in holder:
            holder["instance"] = cls({})
        return holder["instance"]

    class Plugin(_exports.Plugin):
        def describe(self):
            schema = getattr(cls, "config_schema", {"type": "object"})
            if not isinstance(schema, str):
                schema = json.dumps(schema)
            return _plugin_types.Info(
                getattr(cls, "name", cls.__name__),
                getattr(cls, "version", "0.0.0"),
                getattr(cls, "description", (cls.__doc__ or "").strip()),
                schema,
            )

        def configure(self, config):
            try:
                holder["instance"] = cls(json.loads(config) if config else {})
            except Exception as e:
                raise Err(str(e) or type(e).__name__)

    def evaluation(e):
        if not isinstance(e, Evaluation):
            raise TypeError(f"evaluations must be eddy_plugin.Evaluation, got {type(e).__name__}")
        return _a.Evaluation(
            [(str(k), str(v)) for k, v in e.labels.items()],
            e.value,
            e.active,
            e.severity,
            [(str(k), str(v)) for k, v in e.annotations.items()],
        )

    class Alerting(_exports.Alerting):
        def watches(self):
            w = live().watches() or {}
            return _a.Watched(list(w.get("windows", [])), list(w.get("patterns", [])))

        def evaluate(self, input):
            try:
                instance = live()
                if isinstance(input, _a.Input_Windows):
                    r = input.value
                    group_by, aggs = list(r.group_by), list(r.aggregates)
                    results = [
                        WindowResult(
                            kinds[x.kind],
                            x.start, x.end, x.revision,
                            {p: _alert_value(v) for p, v in zip(group_by, x.group)},
                            {a: _alert_value(v) for a, v in zip(aggs, x.values)},
                            group_by,
                        )
                        for x in r.results
                    ]
                    out = instance.on_windows(WindowResults(r.window, group_by, aggs, results))
                else:
                    m = input.value
                    matches = []
                    for x in m.matches:
                        match = Match(x.key, x.start, x.end, m.events, x.steps)
                        match.kind = "timeout" if x.kind == _a.MatchKind.TIMEOUT else "match"
                        match.payload = json.loads(x.payload) if x.payload else None
                        matches.append(match)
                    out = instance.on_matches(PatternMatches(m.pattern, matches))
                return [evaluation(e) for e in (out or [])]
            except Err:
                raise
            except Exception as e:
                raise Err(f"{type(e).__name__}: {e}")

    return Plugin, Alerting


class _LogWriter:
    """A file-like object whose lines go to the host log (level info)."""

    def __init__(self):
        self._pending = ""

    def write(self, text):
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            log("info", line)
        return len(text)

    def flush(self):
        if self._pending:
            log("info", self._pending)
            self._pending = ""


# Host services, reached through eddy's imports (only inside eddy).


def log(level, message, **fields):
    """Log through the host: level is "trace", "debug", "info", "warn" or "error"."""
    _log.log(_log.Level[level.upper()], message, [(k, str(v)) for k, v in fields.items()])


def counter_add(name, delta=1):
    """Add to a plugin-defined counter."""
    _metrics.counter_add(name, delta)


def gauge_set(name, value):
    """Set a plugin-defined gauge."""
    _metrics.gauge_set(name, float(value))


def state_get(key):
    """Bytes stored under ``key`` in host state, or None."""
    return _state.get(key)


def state_set(key, value):
    """Store bytes under ``key`` (kept by the host across swaps and traps)."""
    _state.set(key, bytes(value))


def state_set_if_absent(key, value):
    """Store only if absent; True if stored."""
    return _state.set_if_absent(key, bytes(value))
