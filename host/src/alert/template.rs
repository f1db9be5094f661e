//! Annotation templating: a small hand-written subset of Prometheus's alert
//! templates, enough for the usual `summary`/`description` annotations
//! without pulling in a template engine.
//!
//! Supported, with or without spaces inside the braces:
//! - `{{ $value }}` (also `{{ .Value }}`): the sample's value, formatted as
//!   Go's `%v` prints a float64 for ordinary values (`3`, `0.25`, `1e+21`
//!   differs from Go only in exponent spelling).
//! - `{{ $labels.<name> }}` (also `{{ .Labels.<name> }}`): the alert's label
//!   value; an absent label expands to the empty string.
//!
//! Anything else between `{{` and `}}` (functions, pipelines) is left as
//! written, so a user sees exactly what was not understood; an unclosed
//! `{{` is kept verbatim too.

use std::collections::BTreeMap;

/// Expand `text` for one alert instance (see the module docs for what is
/// supported).
pub fn expand(text: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let expr = after[..close].trim();
        match resolve(expr, labels, value) {
            Some(expanded) => out.push_str(&expanded),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

fn resolve(expr: &str, labels: &BTreeMap<String, String>, value: f64) -> Option<String> {
    if expr == "$value" || expr == ".Value" {
        return Some(format_value(value));
    }
    let name = expr
        .strip_prefix("$labels.")
        .or_else(|| expr.strip_prefix(".Labels."))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some(labels.get(name).cloned().unwrap_or_default())
}

/// A value as Prometheus templates print it: integers without a fraction,
/// `NaN`, `+Inf`, `-Inf` as Go spells them.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("path".to_owned(), "/cart".to_owned()),
            ("alertname".to_owned(), "SlowPage".to_owned()),
        ])
    }

    #[test]
    fn value_and_labels_are_substituted() {
        assert_eq!(
            expand(
                "{{ $labels.alertname }} on {{$labels.path}}: {{ $value }}s (was {{ .Value }})",
                &labels(),
                2.5
            ),
            "SlowPage on /cart: 2.5s (was 2.5)"
        );
        assert_eq!(expand("{{ $value }}", &labels(), 3.0), "3");
        assert_eq!(expand("{{ $value }}", &labels(), f64::INFINITY), "+Inf");
    }

    #[test]
    fn missing_labels_are_empty_and_unknown_expressions_stay() {
        assert_eq!(expand("[{{ $labels.nope }}]", &labels(), 1.0), "[]");
        assert_eq!(
            expand("{{ humanize $value }} {{ $value", &labels(), 1.0),
            "{{ humanize $value }} {{ $value"
        );
        assert_eq!(expand("no braces", &labels(), 1.0), "no braces");
    }
}
