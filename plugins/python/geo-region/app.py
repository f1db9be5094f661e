"""geo-region: the world region of an event's country, from an embedded table.

Reads an ISO 3166-1 alpha-2 country code (``$geoip_country_code`` by
default) and sets ``$region`` (Europe, North America, Latin America, Asia,
Middle East, Africa, Oceania). Codes it does not know get ``unknown`` (by
default: nothing is set). The same stage exists in JavaScript
(plugins/js/geo-region) with the same table, so one can replace the other.
"""

import eddy_plugin
from eddy_plugin import KEEP

REGIONS = {
    "Europe": "AD AL AT BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE "
    "LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SK SM UA VA XK",
    "North America": "BM CA GL PM US",
    "Latin America": "AG AI AR AW BB BL BO BQ BR BS BZ CL CO CR CU CW DM DO EC FK GD GF GP GT GY HN "
    "HT JM KN KY LC MF MQ MS MX NI PA PE PR PY SR SV SX TC TT UY VC VE VG VI",
    "Asia": "AF BD BN BT CN HK ID IN JP KG KH KP KR KZ LA LK MM MN MO MV MY NP PH PK SG TH TJ TL "
    "TM TW UZ VN",
    "Middle East": "AE AM AZ BH GE IL IQ IR JO KW LB OM PS QA SA SY TR YE",
    "Africa": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY "
    "MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    "Oceania": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV VU WF WS",
}
TABLE = {code: region for region, codes in REGIONS.items() for code in codes.split()}


class GeoRegion:
    name = "geo-region"
    version = "1.0.0-python"
    description = "Sets $region from the ISO country code in $geoip_country_code (embedded table)"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "source": {"type": "string", "description": "property holding the country code"},
            "target": {"type": "string", "description": "property to set"},
            "unknown": {"type": ["string", "null"], "description": "value for unknown codes"},
        },
    }

    def __init__(self, config):
        for key in config:
            if key not in ("source", "target", "unknown"):
                raise ValueError(f"unknown config key `{key}`: expected source, target, unknown")
        self.source = config.get("source", "$geoip_country_code")
        self.target = config.get("target", "$region")
        self.unknown = config.get("unknown")
        self.seen = 0

    def process(self, event):
        code = event.get(self.source)
        region = TABLE.get(code.upper()) if isinstance(code, str) else None
        if region is None:
            region = self.unknown
        if region is not None:
            event.set(self.target, region)
        self.seen += 1
        return KEEP

    def end_batch(self):
        # Which runtime served how many events: the hot-swap test reads it
        # from the plugin's counters.
        eddy_plugin.counter_add("events_python", self.seen)
        self.seen = 0


Plugin, Processing = eddy_plugin.processor(GeoRegion)
