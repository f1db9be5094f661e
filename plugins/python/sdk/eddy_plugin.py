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
# Property names as UTF-8, encoded once.
_KEY_BYTES = {}


class Event:
    """One event of a batch: read fields and properties, edit properties."""

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
        if self._edits is not None and key in self._edits:
            v = self._edits[key]
            return default if v is _MISSING else v
        if self._props is not None:
            return self._props.get(key, default)
        # Find the key by its bytes rather than decoding every property:
        # most plugins read one or two of an event's many properties.
        kb = _KEY_BYTES.get(key)
        if kb is None:
            kb = _KEY_BYTES[key] = key.encode()
        b = self._batch
        text = self._text
        keys = b.keys
        r = b.properties[self._i]
        start = r >> 32
        n = len(kb)
        for p in range(start, start + (r & 0xFFFF_FFFF)):
            span = keys[p]
            if span & 0xFFFF_FFFF == n:
                s = span >> 32
                if text[s : s + n] == kb:
                    return _decode(self, b.kinds[p], b.values[p])
        return default

    def set(self, key, value):
        """Set a property: None, bool, int, float, str, or a dict/list (kept as JSON)."""
        if self._edits is None:
            self._edits = {}
        self._edits[key] = value

    def remove(self, key):
        """Remove a property."""
        if self._edits is None:
            self._edits = {}
        self._edits[key] = _MISSING


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
    """The text and edit columns of a result."""

    def __init__(self):
        self.text = bytearray()
        self.keys = []
        self.kinds = bytearray()
        self.values = []

    def span(self, s):
        data = s.encode()
        start = len(self.text)
        self.text += data
        return (start << 32) | len(data)

    def edit(self, key, value):
        self.keys.append(self.span(key))
        if value is _MISSING:
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
    for i in range(n):
        event = Event(batch, text, i)
        outcome = instance.process(event)
        if outcome == DROP:
            kinds[i] = DROP
        elif outcome == KEEP or outcome is None:
            if event._edits:
                first = len(out.keys)
                for key, value in event._edits.items():
                    out.edit(key, value)
                kinds[i] = 2
                args[i] = (first << 32) | (len(out.keys) - first)
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
