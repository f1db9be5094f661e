"""high-value-cart: a cart filled and paid for within 30 minutes, worth at least ``min_total``.

The pattern: one or more ``add_to_cart`` events, then a ``purchase``, per
user, within 30 minutes; after a match, matching resumes past its last
event. ``on_match`` sums ``properties.price`` over the carts: a basket
below ``min_total`` (default 100) is rejected, a larger one is kept with
``{"basket_total": ..., "items": ...}`` attached.
"""

import eddy_plugin
from eddy_plugin import REJECT, Pattern, minutes


class HighValueCart:
    name = "high-value-cart"
    version = "1.0.0"
    description = "add_to_cart one or more, then purchase, within 30m; kept when the basket reaches min_total"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"min_total": {"type": "number", "description": "smallest basket reported"}},
    }

    def __init__(self, config):
        unknown = set(config) - {"min_total"}
        if unknown:
            raise ValueError(f"unknown config key {sorted(unknown)[0]!r}; expected min_total")
        self.min_total = config.get("min_total", 100)
        if not isinstance(self.min_total, (int, float)) or isinstance(self.min_total, bool):
            raise ValueError("config key 'min_total' must be a number")

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
        return {"basket_total": total, "items": len(match.events("cart"))}


Plugin, Matching = eddy_plugin.pattern_plugin(HighValueCart)
