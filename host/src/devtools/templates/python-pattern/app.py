"""{{name}}: a pattern plugin.

One or more ``add_to_cart``, then a ``purchase``, per user, within 30
minutes; a match is kept (with the basket total attached) when the carts'
``price`` adds up to ``min_total`` or more.
"""

import eddy_plugin
from eddy_plugin import REJECT, Pattern, minutes


class Plugin:
    name = "{{name}}"
    version = "0.1.0"
    description = "Pattern: a cart filled then paid for within 30 minutes, kept when the basket reaches min_total"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"min_total": {"type": "number"}},
    }

    def __init__(self, config):
        for key in config:
            if key != "min_total":
                raise ValueError(f"unknown config key `{key}`: expected min_total")
        self.min_total = config.get("min_total", 100)

    def pattern(self):
        return (
            Pattern.begin("cart")
            .matching(lambda e: e.name == "add_to_cart")
            .one_or_more()
            .followed_by("purchase")
            .matching(lambda e: e.name == "purchase")
            .within(minutes(30))
            .skip("past_last_event")
        )

    def on_match(self, match):
        total = match.sum("cart", "price")
        if total < self.min_total:
            return REJECT
        return {"basket_total": total}


Plugin, Matching = eddy_plugin.pattern_plugin(Plugin)
