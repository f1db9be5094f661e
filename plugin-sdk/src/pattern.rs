//! Pattern plugins: a sequence pattern whose conditions are Rust closures.
//!
//! Build the pattern with [`Pattern::begin`] and the FlinkCEP-style methods
//! that follow it, implement [`PatternPlugin`] and export it with
//! [`pattern!`](crate::pattern!). The host runs the matching; the SDK
//! answers `describe-pattern` from the builder, classifies every batch by
//! running each step's closures on each event, and hands completed matches
//! to [`PatternPlugin::on_match`] as a [`Match`].
//!
//! ```
//! use eddy_plugin_sdk::pattern::{minutes, Pattern, PatternPlugin, Skip};
//! use eddy_plugin_sdk::Config;
//!
//! struct Funnel;
//!
//! impl PatternPlugin for Funnel {
//!     fn new(_config: Config) -> Result<Self, String> {
//!         Ok(Funnel)
//!     }
//!
//!     fn pattern(&self) -> Pattern {
//!         Pattern::begin("view")
//!             .matching(|e| e.name() == "$pageview")
//!             .followed_by("cart")
//!             .matching(|e| e.name() == "add_to_cart")
//!             .times(1, 5)
//!             .followed_by("purchase")
//!             .matching(|e| e.name() == "purchase")
//!             .within(minutes(30))
//!             .skip(Skip::PastLastEvent)
//!     }
//! }
//!
//! eddy_plugin_sdk::pattern!(Funnel);
//! # let d = Funnel.pattern().description();
//! # assert_eq!(d.steps.len(), 3);
//! ```

use std::time::Duration;

use crate::Config;
use crate::bindings::pattern::exports::eddy::plugin::matching as wit;
use crate::event::{self, Event};

/// A condition on one event.
type Condition = Box<dyn Fn(&Event<'_>) -> bool>;

/// `n` milliseconds.
pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `n` seconds.
pub fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` minutes.
pub fn minutes(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(60))
}

/// `n` hours.
pub fn hours(n: u64) -> Duration {
    Duration::from_secs(n.saturating_mul(3600))
}

/// Where matching resumes after a match (FlinkCEP's after-match skip
/// strategies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Every partial match goes on (the default).
    NoSkip,
    /// Discard partial matches that began with the match's first event.
    ToNext,
    /// Discard partial matches that began inside the match.
    PastLastEvent,
    /// Discard partial matches that began before the first event of the
    /// named step.
    ToFirst(String),
    /// Discard partial matches that began before the last event of the
    /// named step.
    ToLast(String),
}

/// What [`Pattern::within`] bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithinType {
    /// The time from a match's first event to its last (the default).
    FirstAndLast,
    /// The time from each event of a match to the one before it.
    PreviousAndCurrent,
}

struct Step {
    name: String,
    after: wit::Contiguity,
    min: u32,
    max: Option<u32>,
    optional: bool,
    greedy: bool,
    inner: wit::InnerContiguity,
    condition: Option<Condition>,
    until: Option<Condition>,
}

impl Step {
    fn new(name: &str, after: wit::Contiguity) -> Step {
        Step {
            name: name.to_owned(),
            after,
            min: 1,
            max: Some(1),
            optional: false,
            greedy: false,
            inner: wit::InnerContiguity::Relaxed,
            condition: None,
            until: None,
        }
    }
}

/// A sequence pattern: steps, each with a condition on one event, how it
/// follows the step before, and how many events it takes; a time bound; the
/// key partial matches are kept per; and where matching resumes after a
/// match. Methods that shape a step (`matching`, `times`, `optional`, ...)
/// apply to the step added last.
pub struct Pattern {
    key: String,
    steps: Vec<Step>,
    within_ms: Option<u64>,
    within_type: WithinType,
    skip: Skip,
    wants_matches: bool,
}

impl Pattern {
    /// A pattern whose first step is called `name`. Keyed by
    /// `distinct_id`, no time bound, no skip, until changed.
    pub fn begin(name: &str) -> Pattern {
        Pattern {
            key: "distinct_id".to_owned(),
            steps: vec![Step::new(name, wit::Contiguity::Relaxed)],
            within_ms: None,
            within_type: WithinType::FirstAndLast,
            skip: Skip::NoSkip,
            wants_matches: false,
        }
    }

    fn then(mut self, name: &str, after: wit::Contiguity) -> Pattern {
        self.steps.push(Step::new(name, after));
        self
    }

    fn last(&mut self) -> &mut Step {
        // `begin` makes the first step and nothing removes steps.
        let at = self.steps.len() - 1;
        &mut self.steps[at]
    }

    /// A step that must come directly after the previous one (strict
    /// contiguity).
    pub fn next(self, name: &str) -> Pattern {
        self.then(name, wit::Contiguity::Strict)
    }

    /// A step that may come after other events (relaxed contiguity).
    pub fn followed_by(self, name: &str) -> Pattern {
        self.then(name, wit::Contiguity::Relaxed)
    }

    /// A step that may come after other events, every matching event
    /// starting an alternative (non-deterministic relaxed contiguity).
    pub fn followed_by_any(self, name: &str) -> Pattern {
        self.then(name, wit::Contiguity::Any)
    }

    /// The event right after the previous step's must not match this step.
    pub fn not_next(self, name: &str) -> Pattern {
        self.then(name, wit::Contiguity::NotStrict)
    }

    /// No event matching this step may come between the previous step and
    /// the next (or, as the last step, before `within` runs out).
    pub fn not_followed_by(self, name: &str) -> Pattern {
        self.then(name, wit::Contiguity::NotRelaxed)
    }

    /// The step's condition. Called again, the conditions are combined
    /// with AND (FlinkCEP's `where`). A step without one matches every
    /// event.
    pub fn matching(mut self, condition: impl Fn(&Event<'_>) -> bool + 'static) -> Pattern {
        let step = self.last();
        step.condition = Some(match step.condition.take() {
            None => Box::new(condition),
            Some(before) => Box::new(move |e| before(e) && condition(e)),
        });
        self
    }

    /// The step takes from `min` to `max` events.
    pub fn times(mut self, min: u32, max: u32) -> Pattern {
        let step = self.last();
        step.min = min;
        step.max = Some(max);
        self
    }

    /// The step takes exactly `n` events.
    pub fn times_exactly(self, n: u32) -> Pattern {
        self.times(n, n)
    }

    /// The step takes one event or more.
    pub fn one_or_more(self) -> Pattern {
        self.times_or_more(1)
    }

    /// The step takes `n` events or more.
    pub fn times_or_more(mut self, n: u32) -> Pattern {
        let step = self.last();
        step.min = n;
        step.max = None;
        self
    }

    /// The step may take no event at all.
    pub fn optional(mut self) -> Pattern {
        self.last().optional = true;
        self
    }

    /// A looping step takes as many events as it can.
    pub fn greedy(mut self) -> Pattern {
        self.last().greedy = true;
        self
    }

    /// A looping step's events follow one another directly.
    pub fn consecutive(mut self) -> Pattern {
        self.last().inner = wit::InnerContiguity::Strict;
        self
    }

    /// A looping step matches every combination of its events.
    pub fn allow_combinations(mut self) -> Pattern {
        self.last().inner = wit::InnerContiguity::Any;
        self
    }

    /// A looping step stops taking events at the first event for which
    /// `condition` holds.
    pub fn until(mut self, condition: impl Fn(&Event<'_>) -> bool + 'static) -> Pattern {
        self.last().until = Some(Box::new(condition));
        self
    }

    /// The whole match must take less than `d` (first to last event).
    pub fn within(mut self, d: Duration) -> Pattern {
        self.within_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// What [`Pattern::within`] bounds.
    pub fn within_type(mut self, t: WithinType) -> Pattern {
        self.within_type = t;
        self
    }

    /// What partial matches are kept per: `distinct_id` (the default),
    /// `session_id` or a property path such as `properties.cart_id`.
    pub fn key(mut self, key: &str) -> Pattern {
        self.key = key.to_owned();
        self
    }

    /// Where matching resumes after a match.
    pub fn skip(mut self, skip: Skip) -> Pattern {
        self.skip = skip;
        self
    }

    /// The WIT description of this pattern.
    pub fn description(&self) -> wit::PatternDescription {
        wit::PatternDescription {
            key: self.key.clone(),
            steps: self
                .steps
                .iter()
                .map(|s| wit::StepDescription {
                    name: s.name.clone(),
                    after: s.after,
                    min: s.min,
                    max: s.max,
                    optional: s.optional,
                    greedy: s.greedy,
                    inner: s.inner,
                    has_until: s.until.is_some(),
                })
                .collect(),
            within_ms: self.within_ms,
            within_type: match self.within_type {
                WithinType::FirstAndLast => wit::WithinType::FirstAndLast,
                WithinType::PreviousAndCurrent => wit::WithinType::PreviousAndCurrent,
            },
            skip: match &self.skip {
                Skip::NoSkip => wit::SkipStrategy::NoSkip,
                Skip::ToNext => wit::SkipStrategy::ToNext,
                Skip::PastLastEvent => wit::SkipStrategy::PastLastEvent,
                Skip::ToFirst(s) => wit::SkipStrategy::ToFirst(s.clone()),
                Skip::ToLast(s) => wit::SkipStrategy::ToLast(s.clone()),
            },
            wants_matches: self.wants_matches,
        }
    }

    /// Which steps' conditions (and `until` conditions) `event` satisfies,
    /// one bit per step.
    pub fn classify(&self, event: &Event<'_>) -> (u32, u32) {
        let mut steps = 0u32;
        let mut until = 0u32;
        for (i, s) in self.steps.iter().take(32).enumerate() {
            if s.condition.as_ref().is_none_or(|c| c(event)) {
                steps |= 1 << i;
            }
            if s.until.as_ref().is_some_and(|c| c(event)) {
                until |= 1 << i;
            }
        }
        (steps, until)
    }
}

/// What [`PatternPlugin::on_match`] decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Emit the match, with an optional payload (a JSON object).
    Keep(Option<serde_json::Value>),
    /// Drop the match.
    Reject,
}

/// A completed match, as [`PatternPlugin::on_match`] sees it.
pub struct Match<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    input: &'a event::Input,
    steps: &'a [wit::MatchStep],
}

impl<'a> Match<'a> {
    /// The key the match was found under.
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// Time of the first event (ms since the Unix epoch).
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Time of the last event (ms since the Unix epoch).
    pub fn end(&self) -> i64 {
        self.end
    }

    /// The names of the steps that took events, in pattern order.
    pub fn steps(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.steps.iter().map(|s| s.name.as_str())
    }

    /// How many events step `step` took.
    pub fn count(&self, step: &str) -> usize {
        self.steps
            .iter()
            .find(|s| s.name == step)
            .map_or(0, |s| s.count as usize)
    }

    /// Show `f` each event step `step` took, in order.
    pub fn for_each(&self, step: &str, f: impl FnMut(&mut Event<'_>)) {
        if let Some(s) = self.steps.iter().find(|s| s.name == step) {
            let first = s.first as usize;
            event::each_event(self.input, first..first + s.count as usize, f);
        }
    }

    /// The sum of the numeric property `key` over step `step`'s events
    /// (events without it count 0).
    pub fn sum(&self, step: &str, key: &str) -> f64 {
        let mut total = 0.0;
        self.for_each(step, |e| total += e.f64(key).unwrap_or(0.0));
        total
    }
}

/// A pattern plugin: a [`Pattern`] whose conditions are Rust closures, and
/// optionally a judgement over each completed match.
pub trait PatternPlugin: Sized + 'static {
    /// JSON Schema of the configuration object.
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object"}"#;

    /// Set when [`PatternPlugin::on_match`] is overridden: the host then
    /// hands it every completed match.
    const WANTS_MATCHES: bool = false;

    /// Build an instance from the pattern's `config` table. The host also
    /// builds one from an empty configuration when it loads the plugin,
    /// to read the pattern, so an empty configuration must work.
    fn new(config: Config) -> Result<Self, String>;

    /// The pattern. Its structure (steps, quantifiers, within, key, skip)
    /// must not depend on the configuration; its conditions may.
    fn pattern(&self) -> Pattern;

    /// Judge a completed match: keep it (with a payload) or reject it.
    fn on_match(&mut self, m: &Match<'_>) -> Verdict {
        let _ = m;
        Verdict::Keep(None)
    }
}

/// Export a [`PatternPlugin`] as this crate's plugin (the `pattern` world).
#[macro_export]
macro_rules! pattern {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct EddyExport;
            impl $crate::bindings::pattern::exports::eddy::plugin::plugin::Guest for EddyExport {
                fn describe() -> $crate::bindings::pattern::exports::eddy::plugin::plugin::Info {
                    $crate::bindings::pattern::exports::eddy::plugin::plugin::Info {
                        name: env!("CARGO_PKG_NAME").to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
                        config_schema: <$ty as $crate::pattern::PatternPlugin>::CONFIG_SCHEMA
                            .to_owned(),
                    }
                }
                fn configure(config: String) -> Result<(), String> {
                    $crate::pattern::__private::configure::<$ty>(&config)
                }
            }
            impl $crate::bindings::pattern::exports::eddy::plugin::matching::Guest for EddyExport {
                fn describe_pattern()
                -> $crate::bindings::pattern::exports::eddy::plugin::matching::PatternDescription
                {
                    $crate::pattern::__private::describe_pattern::<$ty>()
                }
                fn classify(
                    batch: $crate::bindings::pattern::eddy::plugin::types::Batch,
                ) -> Result<
                    Vec<$crate::bindings::pattern::exports::eddy::plugin::matching::ConditionBits>,
                    String,
                > {
                    $crate::pattern::__private::classify::<$ty>(batch)
                }
                fn on_match(
                    m: $crate::bindings::pattern::exports::eddy::plugin::matching::CompletedMatch,
                ) -> $crate::bindings::pattern::exports::eddy::plugin::matching::MatchVerdict {
                    $crate::pattern::__private::on_match::<$ty>(m)
                }
            }
            $crate::bindings::pattern::__export_pattern_world!(EddyExport with_types_in $crate::bindings::pattern);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`pattern!`](crate::pattern!); not part of the API.
    use super::*;
    use crate::bindings::eddy::plugin::types::Batch;
    use crate::bindings::pattern::eddy::plugin::types::Batch as PatternBatch;
    use std::any::Any;
    use std::cell::RefCell;

    struct Live<P> {
        plugin: P,
        pattern: Pattern,
    }

    thread_local! {
        static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    fn build<P: PatternPlugin>(config: Config) -> Result<Live<P>, String> {
        let plugin = P::new(config)?;
        let mut pattern = plugin.pattern();
        pattern.wants_matches = P::WANTS_MATCHES;
        Ok(Live { plugin, pattern })
    }

    /// Run `f` on the configured instance, building one from an empty
    /// configuration first if the host has not configured it yet.
    fn with<P: PatternPlugin, T>(f: impl FnOnce(&mut Live<P>) -> T) -> Result<T, String> {
        INSTANCE.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_none_or(|b| !b.is::<Live<P>>()) {
                *slot = Some(Box::new(build::<P>(Config::default())?));
            }
            match slot.as_mut().and_then(|b| b.downcast_mut::<Live<P>>()) {
                Some(live) => Ok(f(live)),
                None => Err("no instance".to_owned()),
            }
        })
    }

    pub fn configure<P: PatternPlugin>(config: &str) -> Result<(), String> {
        crate::__private::install_panic_hook();
        let live = build::<P>(Config::from_json(config)?)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(live)));
        Ok(())
    }

    pub fn describe_pattern<P: PatternPlugin>() -> wit::PatternDescription {
        match with::<P, _>(|live| live.pattern.description()) {
            Ok(d) => d,
            Err(e) => {
                // No steps: the host refuses the version, and the log says why.
                crate::log::log(
                    crate::log::Level::Error,
                    &format!("cannot build the pattern from an empty configuration: {e}"),
                    &[],
                );
                Pattern::begin("x").description_without_steps()
            }
        }
    }

    /// The same WIT record, generated once per world (see
    /// `eddy-plugin-sdk-pattern-bindings`): moved column by column.
    fn batch(b: PatternBatch) -> Batch {
        Batch {
            text: b.text,
            ids: b.ids,
            names: b.names,
            timestamps: b.timestamps,
            distinct_ids: b.distinct_ids,
            session_ids: b.session_ids,
            properties: b.properties,
            keys: b.keys,
            kinds: b.kinds,
            values: b.values,
        }
    }

    pub fn classify<P: PatternPlugin>(
        batch: PatternBatch,
    ) -> Result<Vec<wit::ConditionBits>, String> {
        let input = event::Input::new(self::batch(batch))?;
        with::<P, _>(|live| {
            let mut bits = Vec::with_capacity(input.len());
            event::each_event(&input, 0..input.len(), |e| {
                let (steps, until) = live.pattern.classify(e);
                bits.push(wit::ConditionBits { steps, until });
            });
            bits
        })
    }

    pub fn on_match<P: PatternPlugin>(m: wit::CompletedMatch) -> wit::MatchVerdict {
        let wit::CompletedMatch {
            key,
            start,
            end,
            events,
            steps,
        } = m;
        let verdict = event::Input::new(batch(events)).and_then(|input| {
            let m = Match {
                key: &key,
                start,
                end,
                input: &input,
                steps: &steps,
            };
            with::<P, _>(|live| live.plugin.on_match(&m))
        });
        match verdict {
            Ok(Verdict::Keep(payload)) => wit::MatchVerdict::Keep(payload.map(|p| p.to_string())),
            Ok(Verdict::Reject) => wit::MatchVerdict::Reject,
            Err(e) => {
                crate::log::log(crate::log::Level::Error, &e, &[]);
                wit::MatchVerdict::Keep(None)
            }
        }
    }

    /// Native stand-ins for a plugin's unit tests (see [`crate::testing`]).
    pub fn classify_native<P: PatternPlugin>(
        config: &str,
        batch: Batch,
    ) -> Result<Vec<(u32, u32)>, String> {
        let live = build::<P>(Config::from_json(config)?)?;
        let input = event::Input::new(batch)?;
        let mut bits = Vec::with_capacity(input.len());
        event::each_event(&input, 0..input.len(), |e| {
            bits.push(live.pattern.classify(e));
        });
        Ok(bits)
    }

    /// The description `P` gives under `config`.
    pub fn describe_native<P: PatternPlugin>(
        config: &str,
    ) -> Result<wit::PatternDescription, String> {
        Ok(build::<P>(Config::from_json(config)?)?
            .pattern
            .description())
    }
}

impl Pattern {
    fn description_without_steps(&self) -> wit::PatternDescription {
        let mut d = self.description();
        d.steps.clear();
        d
    }
}
