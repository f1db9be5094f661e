//! Alerts: Prometheus-style alert rules over eddy's results.
//!
//! - [`lifecycle`]: per-rule alert instances (`pending → firing →
//!   resolved`, `for`, `keep_firing_for`, no-data handling, an instance cap)
//!   advanced only by event time, so they live inside the deterministic
//!   engine and its snapshots. Each evaluation yields [`AlertEvent`]s.
//! - [`notify`]: delivery of those events off the engine thread, to
//!   Alertmanager (`/api/v2/alerts`) and to webhooks speaking Alertmanager's
//!   v4 webhook JSON, through bounded outboxes with retries.
//! - [`template`]: `{{ $value }}` / `{{ $labels.<name> }}` in annotations.
//!
//! ```
//! use std::collections::BTreeMap;
//! use eddy::alert::{AlertState, RuleSpec, RuleState, Sample};
//!
//! let mut spec = RuleSpec::new("SlowCheckout");
//! spec.for_ms = 60_000;
//! let mut state = RuleState::new();
//! let sample = |active| Sample {
//!     labels: BTreeMap::from([("path".to_owned(), "/cart".to_owned())]),
//!     value: 2.5,
//!     active,
//!     annotations: BTreeMap::new(),
//! };
//! let mut events = Vec::new();
//! state.evaluate(&spec, 0, &[sample(true)], &mut events);
//! state.evaluate(&spec, 60_000, &[sample(true)], &mut events);
//! let states: Vec<AlertState> = events.iter().map(|e| e.state).collect();
//! assert_eq!(states, [AlertState::Pending, AlertState::Firing]);
//! ```

pub mod lifecycle;
pub mod notify;
pub mod rules;
pub mod template;

pub use lifecycle::{AlertEvent, AlertState, NoDataMode, RuleSpec, RuleState, Sample, fingerprint};
pub use rules::{
    DeclaredRule, Evaluation, Evaluator, Op, PluginEvaluator, PluginRule, RuleValue, Watch, Watched,
};
