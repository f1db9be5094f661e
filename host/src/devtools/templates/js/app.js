// {{name}}: tags every event with the team that owns it ($team, from the
// `team` setting) and drops debug events (names starting with `debug_`).

import { processor, KEEP, DROP } from "./eddy-plugin.js";

export const { plugin, processing } = processor({
  name: "{{name}}",
  version: "0.1.0",
  description: "Tags events with the owning team and drops debug events",
  configSchema: {
    type: "object",
    additionalProperties: false,
    properties: { team: { type: "string", description: "value of $team" } },
  },
  init(config) {
    for (const key of Object.keys(config)) {
      if (key !== "team") throw new Error(`unknown config key \`${key}\`: expected team`);
    }
    return { team: config.team ?? "web" };
  },
  process(event, state) {
    if (event.name.startsWith("debug_")) return DROP;
    event.set("$team", state.team);
    return KEEP;
  },
});
