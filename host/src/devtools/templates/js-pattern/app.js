// {{name}}: a pattern plugin. One or more `add_to_cart`, then a `purchase`,
// per user, within 30 minutes; a match is kept (with the basket total
// attached) when the carts' `price` adds up to `min_total` or more.

import { patternPlugin, Pattern, minutes, REJECT } from "./eddy-plugin.js";

export const { plugin, matching } = patternPlugin({
  name: "{{name}}",
  version: "0.1.0",
  description: "Pattern: a cart filled then paid for within 30 minutes, kept when the basket reaches min_total",
  configSchema: {
    type: "object",
    additionalProperties: false,
    properties: { min_total: { type: "number" } },
  },
  init(config) {
    for (const key of Object.keys(config)) {
      if (key !== "min_total") throw new Error(`unknown config key \`${key}\`: expected min_total`);
    }
    return { minTotal: config.min_total ?? 100 };
  },
  pattern: () =>
    Pattern.begin("cart").matching((e) => e.name === "add_to_cart").oneOrMore()
      .followedBy("purchase").matching((e) => e.name === "purchase")
      .within(minutes(30))
      .skip("past-last-event"),
  onMatch(m, state) {
    const total = m.sum("cart", "price");
    return total < state.minTotal ? REJECT : { basket_total: total };
  },
});
