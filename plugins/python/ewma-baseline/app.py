"""ewma-baseline: an alert when a window aggregate leaves its EWMA baseline.

Per group of the watched window, the plugin keeps an exponentially
weighted moving average of the aggregate and of its variance (the
incremental form in Finch, "Incremental calculation of weighted mean and
variance", 2009): with weight ``alpha`` for the newest value,

    diff = x - mean;  mean += alpha * diff;  var = (1 - alpha) * (var + alpha * diff**2)

Each final result is judged against the baseline *before* it is folded in:
the evaluation's value is ``(x - mean) / sqrt(var)``, active when its size
exceeds ``k``, once the group has ``min_samples`` values. Unlike a trailing
window, the baseline follows slow drifts (a growing site) and forgets old
values smoothly. Corrections are judged but not folded in; early results
are ignored.

The baseline lives in the host's state store (8 + 8 + 8 bytes per group),
so it survives traps, hot swaps and restarts.

Configuration: ``window`` and ``aggregate`` (required), ``alpha`` (0.1,
between 0 and 1), ``k`` (3), ``min_samples`` (10), ``severity``
(``warning``).
"""

import math
import struct

import eddy_plugin
from eddy_plugin import Evaluation, state_get, state_set

_LAYOUT = struct.Struct("<ddq")
_KNOWN = {"window", "aggregate", "alpha", "k", "min_samples", "severity"}


def _number(config, key, default, low, high):
    v = config.get(key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (low < v < high):
        raise ValueError(f"config key '{key}' must be a number between {low} and {high} (exclusive), got {v!r}")
    return float(v)


class EwmaBaseline:
    name = "ewma-baseline"
    version = "1.0.0"
    description = "Alert: a window aggregate more than k EWMA standard deviations from its EWMA baseline, per group"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["window", "aggregate"],
        "properties": {
            "window": {"type": "string"},
            "aggregate": {"type": "string"},
            "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "k": {"type": "number", "exclusiveMinimum": 0},
            "min_samples": {"type": "integer", "minimum": 1},
            "severity": {"type": "string"},
        },
    }

    def __init__(self, config):
        unknown = set(config) - _KNOWN
        if unknown:
            raise ValueError(f"unknown config key {sorted(unknown)[0]!r}; expected one of {', '.join(sorted(_KNOWN))}")
        self.window = config.get("window")
        self.aggregate = config.get("aggregate")
        # The host builds one instance from {} to describe the plugin: it watches nothing.
        if (self.window is None) != (self.aggregate is None):
            missing = "window" if self.window is None else "aggregate"
            raise ValueError(f"config key '{missing}' is required")
        for key in ("window", "aggregate"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"config key '{key}' must be a string")
        self.alpha = _number(config, "alpha", 0.1, 0, 1)
        self.k = _number(config, "k", 3, 0, math.inf)
        self.min_samples = config.get("min_samples", 10)
        if not isinstance(self.min_samples, int) or isinstance(self.min_samples, bool) or self.min_samples < 1:
            raise ValueError("config key 'min_samples' must be a whole number of at least 1")
        self.severity = str(config.get("severity", "warning"))

    def watches(self):
        return {"windows": [self.window] if self.window else []}

    def on_windows(self, results):
        if self.aggregate not in results.aggregates:
            raise ValueError(
                f"window '{results.window}' has no aggregate '{self.aggregate}' (it has: {', '.join(results.aggregates)})"
            )
        out = []
        for r in results.results:
            if r.kind == "early":
                continue
            x = r.value(self.aggregate)
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                continue
            x = float(x)
            key = f"ewma\x1f{self.window}\x1f{self.aggregate}\x1f{r.group_key()}"
            stored = state_get(key)
            mean, var, n = _LAYOUT.unpack(bytes(stored)) if stored and len(stored) == _LAYOUT.size else (x, 0.0, 0)
            if n >= self.min_samples:
                std = math.sqrt(var)
                z = (x - mean) / max(std, 1e-12 * max(abs(mean), 1.0))
                z = max(-1e12, min(1e12, z))
                out.append(
                    Evaluation(
                        z,
                        abs(z) > self.k,
                        labels=r.group_labels(),
                        severity=self.severity,
                        annotations={
                            "summary": f"{self.aggregate} = {x:g} is {z:.2f} deviations from its EWMA baseline {mean:.4g}",
                            "baseline_mean": repr(mean),
                            "baseline_std": repr(std),
                        },
                    )
                )
            if r.kind == "final":
                diff = x - mean
                mean += self.alpha * diff
                var = (1 - self.alpha) * (var + self.alpha * diff * diff)
                state_set(key, _LAYOUT.pack(mean, var, n + 1))
        return out


Plugin, Alerting = eddy_plugin.alert_plugin(EwmaBaseline)
