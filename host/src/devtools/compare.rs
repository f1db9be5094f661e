//! Event-by-event comparison of two outputs: what `plugin test` shows
//! against `--expect`, and what `plugin diff` shows between two versions.
//!
//! Events are matched by `id` (ids survive every stage; events a plugin
//! creates get ids derived from their input's). A matched pair that differs
//! is *changed*, with each differing field: `name`, `timestamp`,
//! `distinct_id`, `session_id`, and `properties.KEY` for each property. An
//! event only on the left is *dropped*, only on the right *added*. When
//! nothing else differs but the order does, the outputs are *reordered*.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// `name`, `timestamp`, ..., or `properties.KEY`.
    pub field: String,
    /// The left value (absent: `None`).
    pub before: Option<Value>,
    /// The right value (absent: `None`).
    pub after: Option<Value>,
}

/// An event present on both sides, with different content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    /// The event id.
    pub id: String,
    /// Its differing fields.
    pub fields: Vec<FieldChange>,
}

/// The differences between two outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Events on the left.
    pub left: usize,
    /// Events on the right.
    pub right: usize,
    /// Events on both sides and equal.
    pub unchanged: usize,
    /// Events on both sides and different.
    pub changed: Vec<Changed>,
    /// Events only on the left.
    pub dropped: Vec<Value>,
    /// Events only on the right.
    pub added: Vec<Value>,
    /// Same events, different order.
    pub reordered: bool,
}

fn key(event: &Value, index: usize) -> String {
    match event.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => format!("#{}", index + 1),
    }
}

/// Compare `left` (expected, or the old version's output) with `right`.
pub fn compare(left: &[Value], right: &[Value]) -> Comparison {
    let mut by_id: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (i, e) in right.iter().enumerate() {
        by_id.entry(key(e, i)).or_default().push_back(i);
    }
    let mut matched = vec![false; right.len()];
    let mut cmp = Comparison {
        left: left.len(),
        right: right.len(),
        ..Comparison::default()
    };
    let mut order = Vec::new();
    for (i, l) in left.iter().enumerate() {
        let id = key(l, i);
        let Some(j) = by_id.get_mut(&id).and_then(VecDeque::pop_front) else {
            cmp.dropped.push(l.clone());
            continue;
        };
        matched[j] = true;
        order.push(j);
        let fields = field_changes(l, &right[j]);
        if fields.is_empty() {
            cmp.unchanged += 1;
        } else {
            cmp.changed.push(Changed { id, fields });
        }
    }
    cmp.added = right
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(e, _)| e.clone())
        .collect();
    cmp.reordered = order.windows(2).any(|w| w[0] > w[1]);
    cmp
}

fn flatten(event: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    let Some(obj) = event.as_object() else {
        return out;
    };
    for (k, v) in obj {
        match (k.as_str(), v.as_object()) {
            ("properties", Some(props)) => {
                out.extend(
                    props
                        .iter()
                        .map(|(pk, pv)| (format!("properties.{pk}"), pv)),
                );
            }
            _ => out.push((k.clone(), v)),
        }
    }
    out
}

fn field_changes(left: &Value, right: &Value) -> Vec<FieldChange> {
    let l: HashMap<String, &Value> = flatten(left).into_iter().collect();
    let r: HashMap<String, &Value> = flatten(right).into_iter().collect();
    // Fields in a stable order: the left's, then fields only on the right.
    let mut fields: Vec<String> = flatten(left).into_iter().map(|(k, _)| k).collect();
    let known: BTreeSet<String> = fields.iter().cloned().collect();
    fields.extend(
        flatten(right)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !known.contains(k)),
    );
    fields
        .into_iter()
        .filter_map(|f| {
            let (b, a) = (l.get(&f).copied(), r.get(&f).copied());
            (!same(b, a)).then(|| FieldChange {
                field: f,
                before: b.cloned(),
                after: a.cloned(),
            })
        })
        .collect()
}

/// JSON equality, with numbers equal when their values are (`1` = `1.0`).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
        }
        (a, b) => a == b,
    }
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".to_owned(),
        Some(v) => v.to_string(),
    }
}

fn describe(e: &Value, index: usize) -> String {
    let name = e.get("name").and_then(Value::as_str).unwrap_or("?");
    let user = e.get("distinct_id").and_then(Value::as_str).unwrap_or("?");
    format!("{} ({name}, user {user})", key(e, index))
}

impl Comparison {
    /// Whether the two outputs are the same.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.dropped.is_empty()
            && self.added.is_empty()
            && !self.reordered
    }

    /// The one-line summary.
    pub fn summary(&self, labels: (&str, &str)) -> String {
        format!(
            "{} events ({}) vs {} ({}): {} unchanged, {} changed, {} dropped, {} added{}",
            self.left,
            labels.0,
            self.right,
            labels.1,
            self.unchanged,
            self.changed.len(),
            self.dropped.len(),
            self.added.len(),
            if self.reordered {
                ", order differs"
            } else {
                ""
            }
        )
    }

    /// A diff for a person: `~` changed (with each field), `-` only on the
    /// left, `+` only on the right; at most `max` events of each kind.
    pub fn render(&self, labels: (&str, &str), max: usize) -> String {
        let mut s = String::new();
        for c in self.changed.iter().take(max) {
            let _ = writeln!(s, "~ {}", c.id);
            for f in &c.fields {
                let _ = writeln!(
                    s,
                    "    {}: {} -> {}",
                    f.field,
                    show(&f.before),
                    show(&f.after)
                );
            }
        }
        more(&mut s, self.changed.len(), max, "changed");
        for (i, e) in self.dropped.iter().enumerate().take(max) {
            let _ = writeln!(s, "- {}: in {} only: {e}", describe(e, i), labels.0);
        }
        more(&mut s, self.dropped.len(), max, "dropped");
        for (i, e) in self.added.iter().enumerate().take(max) {
            let _ = writeln!(s, "+ {}: in {} only: {e}", describe(e, i), labels.1);
        }
        more(&mut s, self.added.len(), max, "added");
        if self.reordered {
            let _ = writeln!(s, "! the same events come out in a different order");
        }
        let _ = writeln!(s, "{}", self.summary(labels));
        s
    }
}

fn more(s: &mut String, n: usize, max: usize, what: &str) {
    if n > max {
        let _ = writeln!(s, "  ... and {} more {what}", n - max);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str, props: Value) -> Value {
        json!({"id": id, "name": "p", "distinct_id": "u", "timestamp": 1, "properties": props})
    }

    #[test]
    fn equal_outputs_have_no_differences() {
        let a = vec![ev("1", json!({"x": 1})), ev("2", json!({}))];
        let c = compare(&a, &a);
        assert!(c.is_empty());
        assert_eq!(c.unchanged, 2);
    }

    #[test]
    fn reports_changed_fields_dropped_and_added_events() {
        let old = vec![
            ev("1", json!({"x": 1, "gone": true})),
            ev("2", json!({})),
            ev("3", json!({})),
        ];
        let new = vec![
            ev("1", json!({"x": 2, "new": "y"})),
            ev("3", json!({})),
            ev("4", json!({})),
        ];
        let c = compare(&old, &new);
        assert_eq!(c.unchanged, 1);
        assert_eq!(c.changed.len(), 1);
        let fields: Vec<(&str, Option<Value>, Option<Value>)> = c.changed[0]
            .fields
            .iter()
            .map(|f| (f.field.as_str(), f.before.clone(), f.after.clone()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("properties.x", Some(json!(1)), Some(json!(2))),
                ("properties.gone", Some(json!(true)), None),
                ("properties.new", None, Some(json!("y"))),
            ]
        );
        assert_eq!(c.dropped, vec![ev("2", json!({}))]);
        assert_eq!(c.added, vec![ev("4", json!({}))]);
        let text = c.render(("old", "new"), 10);
        assert!(text.contains("~ 1\n    properties.x: 1 -> 2"), "{text}");
        assert!(text.contains("properties.gone: true -> (absent)"), "{text}");
        assert!(text.contains("- 2 (p, user u): in old only"), "{text}");
        assert!(text.contains("+ 4 (p, user u): in new only"), "{text}");
        assert!(
            text.contains("1 unchanged, 1 changed, 1 dropped, 1 added"),
            "{text}"
        );
    }

    #[test]
    fn order_matters_and_numbers_compare_by_value() {
        let a = vec![ev("1", json!({"f": 1.0})), ev("2", json!({}))];
        let b = vec![ev("2", json!({})), ev("1", json!({"f": 1}))];
        let c = compare(&a, &b);
        assert!(c.changed.is_empty(), "{c:?}");
        assert!(c.reordered);
        assert!(!c.is_empty());
    }
}
