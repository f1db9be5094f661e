//! TEMPORARY stand-in (count and sum only) while the real aggregates are
//! written on another branch; replaced at merge.
#![allow(missing_docs)]

use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::event::Event;
use crate::filter::{FieldPath, FieldRef, Record};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct AggError(String);

#[derive(Debug, Clone)]
enum Kind {
    Count,
    Sum(FieldPath),
}

#[derive(Debug, Clone)]
pub struct AggSpec {
    name: String,
    kind: Kind,
}

impl AggSpec {
    pub fn parse(text: &str) -> Result<AggSpec, AggError> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let kind = if t == "count" {
            Kind::Count
        } else if let Some(p) = t.strip_prefix("sum(").and_then(|r| r.strip_suffix(')')) {
            Kind::Sum(FieldPath::parse(p, "sum").map_err(|e| AggError(e.to_string()))?)
        } else {
            return Err(AggError(format!("unknown aggregate `{t}`")));
        };
        Ok(AggSpec { name: t, kind })
    }
    pub fn output_name(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, Clone)]
pub struct Aggregates {
    specs: Arc<[AggSpec]>,
}

#[derive(Debug, Clone)]
pub struct Acc {
    slots: Vec<f64>,
}

impl Aggregates {
    pub fn parse_all(texts: &[String], at: &str) -> Result<Aggregates, AggError> {
        let specs = texts
            .iter()
            .map(|t| AggSpec::parse(t).map_err(|e| AggError(format!("{at}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Aggregates {
            specs: specs.into(),
        })
    }
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.specs.iter().map(|s| s.name.as_str())
    }
    pub fn new_acc(&self) -> Acc {
        Acc {
            slots: vec![0.0; self.specs.len()],
        }
    }
    pub fn add(&self, acc: &mut Acc, ev: &Event, _arrival: u64) {
        for (s, slot) in self.specs.iter().zip(acc.slots.iter_mut()) {
            match &s.kind {
                Kind::Count => *slot += 1.0,
                Kind::Sum(p) => match ev.field(p) {
                    Some(FieldRef::Int(i)) => *slot += i as f64,
                    Some(FieldRef::Float(f)) => *slot += f,
                    _ => {}
                },
            }
        }
    }
    pub fn merge(&self, into: &mut Acc, from: &Acc) {
        for (a, b) in into.slots.iter_mut().zip(&from.slots) {
            *a += b;
        }
    }
    pub fn finish(&self, acc: &Acc, _span_ms: i64) -> Map<String, Json> {
        self.specs
            .iter()
            .zip(&acc.slots)
            .map(|(s, v)| (s.name.clone(), Json::from(*v as i64)))
            .collect()
    }
    pub fn approx_bytes(&self, acc: &Acc) -> usize {
        acc.slots.len() * 8
    }
}
