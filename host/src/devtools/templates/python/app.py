"""{{name}}: tags every event with the team that owns it ($team, from the
`team` setting) and drops debug events (names starting with `debug_`)."""

import eddy_plugin
from eddy_plugin import DROP, KEEP


class Plugin:
    name = "{{name}}"
    version = "0.1.0"
    description = "Tags events with the owning team and drops debug events"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"team": {"type": "string", "description": "value of $team"}},
    }

    def __init__(self, config):
        unknown = set(config) - {"team"}
        if unknown:
            raise ValueError(f"unknown config key `{sorted(unknown)[0]}`: expected team")
        self.team = config.get("team", "web")

    def process(self, event):
        if event.name.startswith("debug_"):
            return DROP
        event.set("$team", self.team)
        return KEEP


Plugin, Processing = eddy_plugin.processor(Plugin)
