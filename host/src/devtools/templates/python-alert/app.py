"""{{name}}: an alert plugin.

For every final result of the window named by ``window`` (default
``errors_per_service``), the aggregate named by ``aggregate`` (default
``error_ratio``), per group, active when it is above ``max`` (default 0.05).
Keep baselines in host state (``eddy_plugin.state_get`` / ``state_set``).
"""

import eddy_plugin
from eddy_plugin import Evaluation


class Alert:
    name = "{{name}}"
    version = "0.1.0"
    description = "Alert: a window aggregate above a threshold, per group"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "window": {"type": "string"},
            "aggregate": {"type": "string"},
            "max": {"type": "number"},
        },
    }

    def __init__(self, config):
        unknown = set(config) - {"window", "aggregate", "max"}
        if unknown:
            raise ValueError(f"unknown config key {sorted(unknown)[0]!r}; expected window, aggregate, max")
        self.window = config.get("window", "errors_per_service")
        self.aggregate = config.get("aggregate", "error_ratio")
        self.max = config.get("max", 0.05)
        if not isinstance(self.max, (int, float)) or isinstance(self.max, bool):
            raise ValueError("config key 'max' must be a number")

    def watches(self):
        return {"windows": [self.window]}

    def on_windows(self, results):
        out = []
        for r in results.results:
            x = r.value(self.aggregate)
            if r.kind != "final" or not isinstance(x, (int, float)) or isinstance(x, bool):
                continue
            out.append(
                Evaluation(
                    x,
                    x > self.max,
                    labels=r.group_labels(),
                    severity="warning",
                    annotations={"summary": f"{self.aggregate} is {x}, above {self.max}"},
                )
            )
        return out


Plugin, Alerting = eddy_plugin.alert_plugin(Alert)
