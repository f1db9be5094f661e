// geo-region: the world region of an event's country, from an embedded table.
//
// The JavaScript twin of plugins/python/geo-region (same table, same
// configuration, same output), so either can replace the other in a live
// stage. Reads an ISO 3166-1 alpha-2 code (`$geoip_country_code` by default)
// and sets `$region`; unknown codes get `unknown` (by default nothing).

import { processor, counterAdd, KEEP } from "./eddy-plugin.js";

const REGIONS = {
  "Europe": "AD AL AT BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE " +
    "LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SK SM UA VA XK",
  "North America": "BM CA GL PM US",
  "Latin America": "AG AI AR AW BB BL BO BQ BR BS BZ CL CO CR CU CW DM DO EC FK GD GF GP GT GY HN " +
    "HT JM KN KY LC MF MQ MS MX NI PA PE PR PY SR SV SX TC TT UY VC VE VG VI",
  "Asia": "AF BD BN BT CN HK ID IN JP KG KH KP KR KZ LA LK MM MN MO MV MY NP PH PK SG TH TJ TL " +
    "TM TW UZ VN",
  "Middle East": "AE AM AZ BH GE IL IQ IR JO KW LB OM PS QA SA SY TR YE",
  "Africa": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY " +
    "MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
  "Oceania": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV VU WF WS",
};
const TABLE = new Map();
for (const [region, codes] of Object.entries(REGIONS)) {
  for (const code of codes.split(" ")) TABLE.set(code, region);
}
const KEYS = ["source", "target", "unknown"];

export const { plugin, processing } = processor({
  name: "geo-region",
  version: "1.0.0-js",
  description: "Sets $region from the ISO country code in $geoip_country_code (embedded table)",
  configSchema: {
    type: "object",
    additionalProperties: false,
    properties: {
      source: { type: "string", description: "property holding the country code" },
      target: { type: "string", description: "property to set" },
      unknown: { type: ["string", "null"], description: "value for unknown codes" },
    },
  },
  init(config) {
    for (const key of Object.keys(config)) {
      if (!KEYS.includes(key)) throw new Error(`unknown config key \`${key}\`: expected source, target, unknown`);
    }
    return {
      source: config.source ?? "$geoip_country_code",
      target: config.target ?? "$region",
      unknown: config.unknown ?? null,
      seen: 0,
    };
  },
  process(event, cfg) {
    const code = event.get(cfg.source);
    let region = typeof code === "string" ? TABLE.get(code.toUpperCase()) : undefined;
    if (region === undefined) region = cfg.unknown;
    if (region !== null) event.set(cfg.target, region);
    cfg.seen++;
    return KEEP;
  },
  // Which runtime served how many events: the hot-swap test reads it from
  // the plugin's counters.
  endBatch(cfg) {
    counterAdd("events_js", cfg.seen);
    cfg.seen = 0;
  },
});
