//! A bus described in data: capacity, producer kind, wait strategy, stages
//! with their dependencies, pools, failure policies and pinning, read with
//! serde from TOML, JSON or any self-describing format, and built with
//! handlers registered by name. Feature `serde`.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use ringbus::config::{BusConfig, Handlers};
//! use ringbus::{Publisher, Sequence};
//!
//! let description = r#"{
//!     "capacity": 1024,
//!     "producer": "multi",
//!     "wait_strategy": { "kind": "sleeping", "spin_tries": 0, "sleep_us": 1 },
//!     "stages": [
//!         { "name": "decode" },
//!         { "name": "risk", "after": ["decode"], "workers": 2 },
//!         { "name": "book", "after": ["risk"],
//!           "on_failure": { "retries": 2, "backoff_ms": 1, "then": "skip" } }
//!     ]
//! }"#;
//! let config = BusConfig::from_deserializer(
//!     &mut serde_json::Deserializer::from_str(description),
//! ).unwrap();
//!
//! let booked = Arc::new(AtomicU64::new(0));
//! let b = Arc::clone(&booked);
//! let handlers = Handlers::new()
//!     .handler("decode", |_: &u64, _: Sequence, _: bool| {})
//!     .pool("risk", |_worker| |_: &u64, _: Sequence, _: bool| {})
//!     .fallible("book", move |_: &u64, _: Sequence, _: bool| {
//!         b.fetch_add(1, Ordering::Relaxed);
//!         Ok::<(), std::io::Error>(())
//!     });
//! let mut producer = config.build(|| 0u64, handlers).unwrap();
//! for i in 0..1000 {
//!     producer.publish(|e| *e = i).unwrap();
//! }
//! producer.shutdown().unwrap();
//! assert_eq!(booked.load(Ordering::Relaxed), 1000);
//! # }
//! ```
//!
//! The same in TOML:
//!
//! ```toml
//! capacity = 1024
//! producer = "multi"
//! wait_strategy = { kind = "sleeping", spin_tries = 0, sleep_us = 1 }
//!
//! [[stages]]
//! name = "decode"
//!
//! [[stages]]
//! name = "risk"
//! after = ["decode"]
//! workers = 2
//!
//! [[stages]]
//! name = "book"
//! after = ["risk"]
//! on_failure = { retries = 2, backoff_ms = 1, then = "skip" }
//! ```
//!
//! A stage without `after` reads the ring directly (it runs in parallel with
//! the other such stages); `after` lists earlier stages by name. A stage
//! runs the handler registered under its `handler` key, or under its name.
//!
//! Every error names where it is: a field the parser refused
//! (`stages[2].on_failure.then: unknown variant ...`), a name that does not
//! resolve (`stages[1].after: no earlier stage named "decod"`), or a bus the
//! builder refused (`capacity: ring capacity 1000 is not a power of two`).
//!
//! Handlers are called through a pointer (one indirect call per event): a
//! bus built in code avoids even that, and keeps the handlers' types for
//! [`ShutdownReport::take_handler`](crate::ShutdownReport::take_handler).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::builder::{Builder, StageId};
use crate::error::{BuildError, PublishError, SubscribeError, TryPublishError};
use crate::fault::{BoxError, Failure, FailurePolicy};
use crate::handler::{forward_lifecycle, EventHandler, EventHandlerMut, TryEventHandler};
use crate::metrics::Metrics;
use crate::poller::Subscription;
use crate::producer::{MultiProducer, Publisher, SingleProducer};
use crate::report::ShutdownError;
use crate::report::ShutdownReport;
use crate::ring_buffer::BatchMut;
use crate::sequence::Sequence;
use crate::sequencer::Sequencer;
use crate::wait_strategy::{AnyStrategy, Fallback, PhasedBackoff, Sleeping, Yielding};

/// A bus description; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BusConfig {
    /// Ring size, a power of two.
    pub capacity: usize,
    /// `"single"` (the default) or `"multi"`.
    #[serde(default)]
    pub producer: ProducerKind,
    /// A name (`"blocking"`, the default) or a table with `kind` and fields.
    #[serde(default, deserialize_with = "wait_config")]
    pub wait_strategy: WaitConfig,
    /// The stages, each after the stages it names in `after`.
    pub stages: Vec<StageConfig>,
}

/// Which producer handle the bus has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProducerKind {
    /// [`SingleProducer`]: one publishing thread, no read-modify-write.
    #[default]
    Single,
    /// [`MultiProducer`]: clone it for each publishing thread.
    Multi,
}

/// A wait strategy with its fields (durations in microseconds). Written as a
/// name (each field at its default) or as a table:
/// `{ kind = "sleeping", spin_tries = 0, yield_tries = 0, sleep_us = 1 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum WaitConfig {
    /// [`BusySpin`](crate::BusySpin). (Variants without fields are written
    /// with braces so that a table with a stray field is refused.)
    BusySpin {},
    /// [`BusySpinWithHint`](crate::BusySpinWithHint).
    BusySpinWithHint {},
    /// [`Yielding`].
    Yielding {
        /// Polls before the first yield.
        #[serde(default = "default_tries")]
        spin_tries: u32,
    },
    /// [`Sleeping`].
    Sleeping {
        /// Polls with a spin hint before yielding.
        #[serde(default = "default_tries")]
        spin_tries: u32,
        /// Polls with a yield before sleeping.
        #[serde(default = "default_tries")]
        yield_tries: u32,
        /// Each nap, in microseconds.
        #[serde(default = "default_sleep_us")]
        sleep_us: u64,
    },
    /// [`Blocking`](crate::Blocking) (the default).
    Blocking {},
    /// [`PhasedBackoff`].
    PhasedBackoff {
        /// Spinning, in microseconds.
        #[serde(default = "default_spin_us")]
        spin_us: u64,
        /// Yielding after that, in microseconds.
        #[serde(default = "default_yield_us")]
        yield_us: u64,
        /// Then nap this long between polls; without it, park.
        #[serde(default)]
        sleep_us: Option<u64>,
    },
}

impl Default for WaitConfig {
    /// `Blocking`: no CPU while idle, safe on any machine.
    fn default() -> Self {
        Self::Blocking {}
    }
}

fn default_tries() -> u32 {
    100
}
fn default_sleep_us() -> u64 {
    50
}
fn default_spin_us() -> u64 {
    10
}
fn default_yield_us() -> u64 {
    100
}

const STRATEGY_NAMES: &[&str] = &[
    "busy-spin",
    "busy-spin-with-hint",
    "yielding",
    "sleeping",
    "blocking",
    "phased-backoff",
];

impl WaitConfig {
    /// The strategy called `name`, with every field at its default.
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "busy-spin" => Self::BusySpin {},
            "busy-spin-with-hint" => Self::BusySpinWithHint {},
            "yielding" => Self::Yielding {
                spin_tries: default_tries(),
            },
            "sleeping" => Self::Sleeping {
                spin_tries: default_tries(),
                yield_tries: default_tries(),
                sleep_us: default_sleep_us(),
            },
            "blocking" => Self::Blocking {},
            "phased-backoff" => Self::PhasedBackoff {
                spin_us: default_spin_us(),
                yield_us: default_yield_us(),
                sleep_us: None,
            },
            _ => return None,
        })
    }

    /// The strategy this describes.
    pub fn strategy(&self) -> AnyStrategy {
        match *self {
            Self::BusySpin {} => AnyStrategy::BusySpin,
            Self::BusySpinWithHint {} => AnyStrategy::BusySpinWithHint,
            Self::Yielding { spin_tries } => Yielding::new(spin_tries).into(),
            Self::Sleeping {
                spin_tries,
                yield_tries,
                sleep_us,
            } => Sleeping::new(spin_tries, yield_tries, Duration::from_micros(sleep_us)).into(),
            Self::Blocking {} => AnyStrategy::Blocking,
            Self::PhasedBackoff {
                spin_us,
                yield_us,
                sleep_us,
            } => PhasedBackoff::new(
                Duration::from_micros(spin_us),
                Duration::from_micros(yield_us),
                match sleep_us {
                    Some(us) => Fallback::Sleep(Duration::from_micros(us)),
                    None => Fallback::Blocking,
                },
            )
            .into(),
        }
    }
}

/// `wait_strategy`: a name, or a table tagged with `kind`.
fn wait_config<'de, D: Deserializer<'de>>(d: D) -> Result<WaitConfig, D::Error> {
    struct NameOrTable;
    impl<'de> Visitor<'de> for NameOrTable {
        type Value = WaitConfig;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a wait strategy: a name such as \"blocking\", or a table with `kind`")
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<WaitConfig, E> {
            WaitConfig::named(name).ok_or_else(|| E::unknown_variant(name, STRATEGY_NAMES))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WaitConfig, A::Error> {
            WaitConfig::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(NameOrTable)
}

/// One stage of a [`BusConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StageConfig {
    /// The stage's name (its thread name, and how `after` refers to it).
    pub name: String,
    /// The registered handler it runs; by default the one named like the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// Earlier stages this one waits for; none means the ring itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// A work pool of this many workers (the handler must be registered with
    /// [`Handlers::pool`]); each event goes to one worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Pin the stage's thread (every worker's, for a pool) to this core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_core: Option<usize>,
    /// Call the handler's `on_timeout` after this many quiet milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What a failed event leads to; halt by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FailureConfig>,
}

/// A [`FailurePolicy`] in data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FailureConfig {
    /// Retries before `then` applies.
    #[serde(default)]
    pub retries: u32,
    /// The first retry's wait in milliseconds, doubled for each next one.
    #[serde(default)]
    pub backoff_ms: u64,
    /// `"halt"` (the default), `"skip"`, or `{ dead-letter = "sink" }` naming
    /// a sink registered with [`Handlers::dead_letter_sink`].
    #[serde(default)]
    pub then: Then,
}

/// What happens to a failed event once its retries are used up.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Then {
    /// [`FailurePolicy::halt`].
    #[default]
    Halt,
    /// [`FailurePolicy::skip`].
    Skip,
    /// [`FailurePolicy::dead_letter`] into the sink registered under this name.
    DeadLetter(String),
}

/// A description that could not be read or built; [`path`](Self::path)
/// says where (`stages[2].after`), the message says what to fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The parser refused a field (wrong type, unknown name, missing field).
    Parse {
        /// Where, e.g. `stages[0].on_failure.then`.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A name does not resolve, or is given twice.
    Invalid {
        /// Where, e.g. `stages[1].after`.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The builder refused the bus.
    Build {
        /// Where, e.g. `capacity` or `stages[3].pin_core`.
        path: String,
        /// The builder's error.
        error: BuildError,
    },
}

impl ConfigError {
    /// Where in the description the error is.
    pub fn path(&self) -> &str {
        match self {
            Self::Parse { path, .. } | Self::Invalid { path, .. } | Self::Build { path, .. } => {
                path
            }
        }
    }

    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { path, message } | Self::Invalid { path, message } => {
                write!(f, "{path}: {message}")
            }
            Self::Build { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Build { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl BusConfig {
    /// Reads a description from any serde deserializer; an error names the
    /// path of the field it is about.
    ///
    /// ```
    /// # #[cfg(feature = "serde")] {
    /// use ringbus::config::BusConfig;
    /// let text = r#"{ "capacity": 64, "stages": [{ "name": "a", "workers": "two" }] }"#;
    /// let err = BusConfig::from_deserializer(&mut serde_json::Deserializer::from_str(text))
    ///     .unwrap_err();
    /// assert_eq!(err.path(), "stages[0].workers");
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the field's path and the parser's message.
    pub fn from_deserializer<'de, D: Deserializer<'de>>(d: D) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(d).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse {
                path: if path == "." {
                    String::from("(top level)")
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Builds the bus: a ring of `capacity` events made by `factory`, and
    /// every stage running the handler registered for it in `handlers`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a handler, `after` or dead-letter name
    /// that does not resolve (or a handler used twice, or of the wrong kind
    /// for a pool); [`ConfigError::Build`] for what the builder refuses
    /// (capacity, a core, a mutating stage beside another).
    pub fn build<E, F>(
        &self,
        factory: F,
        handlers: Handlers<E>,
    ) -> Result<AnyProducer<E>, ConfigError>
    where
        E: Send + Sync + 'static,
        F: FnMut() -> E + 'static,
    {
        if let Some(name) = &handlers.registered_twice {
            return Err(ConfigError::invalid(
                "(handlers)",
                format!("a handler or sink named `{name}` is registered twice"),
            ));
        }
        let strategy = self.wait_strategy.strategy();
        Ok(match self.producer {
            ProducerKind::Single => {
                let builder = crate::single_producer(self.capacity, factory, strategy);
                let builder = self.add_stages(builder, handlers)?;
                AnyProducer::Single(builder.try_build().map_err(|e| self.locate(e))?)
            }
            ProducerKind::Multi => {
                let builder = crate::multi_producer(self.capacity, factory, strategy);
                let builder = self.add_stages(builder, handlers)?;
                AnyProducer::Multi(builder.try_build().map_err(|e| self.locate(e))?)
            }
        })
    }

    fn add_stages<E, S>(
        &self,
        mut builder: Builder<E, S, AnyStrategy>,
        mut handlers: Handlers<E>,
    ) -> Result<Builder<E, S, AnyStrategy>, ConfigError>
    where
        E: Send + Sync + 'static,
        S: Sequencer,
    {
        // Each stage's ids: one per worker for a pool, all of them waited for.
        let mut ids: Vec<(&str, Vec<StageId>)> = Vec::with_capacity(self.stages.len());
        for (i, stage) in self.stages.iter().enumerate() {
            let at = |field: &str| format!("stages[{i}].{field}");
            if ids.iter().any(|(name, _)| *name == stage.name) {
                return Err(ConfigError::invalid(
                    at("name"),
                    format!("`{}` names two stages; give each its own name", stage.name),
                ));
            }
            let mut after = Vec::new();
            for (j, dep) in stage.after.iter().enumerate() {
                let Some((_, dep_ids)) = ids.iter().find(|(name, _)| name == dep) else {
                    let earlier: Vec<&str> = ids.iter().map(|(name, _)| *name).collect();
                    return Err(ConfigError::invalid(
                        format!("stages[{i}].after[{j}]"),
                        format!(
                            "no earlier stage named `{dep}`; list a stage before the stages \
                             that wait for it (earlier stages: {earlier:?})"
                        ),
                    ));
                };
                after.extend_from_slice(dep_ids);
            }
            builder = builder.after(&after).thread_name(stage.name.clone());
            if let Some(core) = stage.pin_core {
                builder = builder.pin_at_core(core);
            }
            if let Some(ms) = stage.timeout_ms {
                if ms == 0 {
                    return Err(ConfigError::invalid(
                        at("timeout_ms"),
                        "0 would call on_timeout without pause; give at least 1 or leave it out",
                    ));
                }
                builder = builder.timeout(Duration::from_millis(ms));
            }
            if let Some(failure) = &stage.on_failure {
                builder = builder.on_failure(failure.policy(&handlers, &at("on_failure.then"))?);
            }
            let key = stage.handler.as_deref().unwrap_or(&stage.name);
            let Some(entry) = handlers.entries.remove(key) else {
                let path = at(if stage.handler.is_some() {
                    "handler"
                } else {
                    "name"
                });
                let used = self.stages[..i]
                    .iter()
                    .any(|s| s.handler.as_deref().unwrap_or(&s.name) == key);
                let message = if used {
                    format!("the handler `{key}` is already used by an earlier stage; register one per stage")
                } else {
                    let mut known: Vec<&String> = handlers.entries.keys().collect();
                    known.sort();
                    format!("no handler registered as `{key}` (registered and unused: {known:?})")
                };
                return Err(ConfigError::invalid(path, message));
            };
            let first = builder.last_stage().map_or(0, |id| id.index() + 1);
            builder = match (entry, stage.workers) {
                (Entry::Pool(make), Some(workers)) => {
                    builder.handle_events_with_pool(workers, move |w| Local(make(w)))
                }
                (Entry::Pool(_), None) => {
                    return Err(ConfigError::invalid(
                        at("workers"),
                        format!("`{key}` is registered as a pool; give the stage `workers`"),
                    ))
                }
                (_, Some(_)) => {
                    return Err(ConfigError::invalid(
                        at("workers"),
                        format!("`{key}` is not registered as a pool (`Handlers::pool`); remove `workers` or register a pool"),
                    ))
                }
                (Entry::Read(h), None) => builder.handle_events_with(Dyn(h)),
                (Entry::Mutate(h), None) => builder.handle_events_with(DynMut(h)),
                (Entry::Try(h), None) => builder.try_handle_events_with(DynTry(h)),
            };
            let last = builder.last_stage().map_or(0, |id| id.index() + 1);
            let stage_ids = (first..last).filter_map(|k| builder.stage_id(k)).collect();
            ids.push((stage.name.as_str(), stage_ids));
        }
        Ok(builder)
    }

    /// Where in the description a builder error comes from.
    fn locate(&self, error: BuildError) -> ConfigError {
        let path = match &error {
            BuildError::Capacity { .. } => String::from("capacity"),
            BuildError::NoSuchCore { requested, .. } => self
                .stages
                .iter()
                .position(|s| s.pin_core == Some(*requested))
                .map_or_else(
                    || String::from("stages"),
                    |i| format!("stages[{i}].pin_core"),
                ),
            BuildError::EmptyPool { .. } => self
                .stages
                .iter()
                .position(|s| s.workers == Some(0))
                .map_or_else(
                    || String::from("stages"),
                    |i| format!("stages[{i}].workers"),
                ),
            BuildError::ConcurrentMutation { mutating: name, .. }
            | BuildError::DuplicateName { name }
            | BuildError::BadName { name } => self
                .stages
                .iter()
                .position(|s| s.name == *name)
                .or_else(|| {
                    // A pool worker, `name-<worker>`.
                    self.stages.iter().position(|s| {
                        s.workers.is_some()
                            && name
                                .strip_prefix(s.name.as_str())
                                .and_then(|rest| rest.strip_prefix('-'))
                                .is_some_and(|w| w.parse::<usize>().is_ok())
                    })
                })
                .map_or_else(|| String::from("stages"), |i| format!("stages[{i}].name")),
            _ => String::from("stages"),
        };
        ConfigError::Build { path, error }
    }
}

impl FailureConfig {
    fn policy<E: 'static>(
        &self,
        handlers: &Handlers<E>,
        path: &str,
    ) -> Result<FailurePolicy<E>, ConfigError> {
        let policy = match &self.then {
            Then::Halt => FailurePolicy::halt(),
            Then::Skip => FailurePolicy::skip(),
            Then::DeadLetter(name) => {
                let Some(sink) = handlers.sinks.get(name) else {
                    let mut known: Vec<&String> = handlers.sinks.keys().collect();
                    known.sort();
                    return Err(ConfigError::invalid(
                        path,
                        format!(
                            "no dead-letter sink registered as `{name}` (registered: {known:?})"
                        ),
                    ));
                };
                let sink = Arc::clone(sink);
                FailurePolicy::dead_letter(move |stage, event, seq, failure| {
                    sink(stage, event, seq, failure)
                })
            }
        };
        Ok(policy.retry(self.retries, Duration::from_millis(self.backoff_ms)))
    }
}

type Sink<E> = Arc<dyn Fn(&str, &E, Sequence, &Failure) + Send + Sync>;
type MakeWorker<E> = Arc<dyn Fn(usize) -> Box<dyn EventHandler<E>> + Send + Sync>;

enum Entry<E> {
    Read(Box<dyn EventHandler<E> + Send>),
    Mutate(Box<dyn EventHandlerMut<E> + Send>),
    Try(Box<dyn TryEventHandler<E, Error = BoxError> + Send>),
    Pool(MakeWorker<E>),
}

/// The handlers a [`BusConfig`] refers to, by name.
///
/// Each handler serves one stage (it is moved into it); a pool's factory
/// makes one handler per worker; a dead-letter sink may serve many stages.
#[must_use = "handlers do nothing until passed to `BusConfig::build`"]
pub struct Handlers<E> {
    entries: HashMap<String, Entry<E>>,
    sinks: HashMap<String, Sink<E>>,
    registered_twice: Option<String>,
}

impl<E> fmt::Debug for Handlers<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("Handlers")
            .field("handlers", &names)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl<E: 'static> Default for Handlers<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: 'static> Handlers<E> {
    /// No handlers yet.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            sinks: HashMap::new(),
            registered_twice: None,
        }
    }

    fn insert(mut self, name: String, entry: Entry<E>) -> Self {
        if self.entries.insert(name.clone(), entry).is_some() {
            self.registered_twice.get_or_insert(name);
        }
        self
    }

    /// A reading stage's handler (see [`Builder::handle_events_with`]).
    pub fn handler(
        self,
        name: impl Into<String>,
        handler: impl EventHandler<E> + Send + 'static,
    ) -> Self {
        self.insert(name.into(), Entry::Read(Box::new(handler)))
    }

    /// A mutating stage's handler (see [`EventHandlerMut`]).
    pub fn mutating(
        self,
        name: impl Into<String>,
        handler: impl EventHandlerMut<E> + Send + 'static,
    ) -> Self {
        self.insert(name.into(), Entry::Mutate(Box::new(handler)))
    }

    /// A fallible stage's handler (see [`TryEventHandler`]).
    pub fn fallible<H>(self, name: impl Into<String>, handler: H) -> Self
    where
        H: TryEventHandler<E> + Send + 'static,
    {
        self.insert(name.into(), Entry::Try(Box::new(Erased(handler))))
    }

    /// A work pool's handler factory, called with each worker's index on the
    /// worker's thread (see [`Builder::handle_events_with_pool`]); the stage
    /// gives the number of `workers`.
    pub fn pool<H, F>(self, name: impl Into<String>, make: F) -> Self
    where
        H: EventHandler<E> + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let make: MakeWorker<E> = Arc::new(move |w| Box::new(make(w)));
        self.insert(name.into(), Entry::Pool(make))
    }

    /// A dead-letter sink that `then = { dead-letter = "name" }` refers to;
    /// see [`FailurePolicy::dead_letter`].
    pub fn dead_letter_sink(
        mut self,
        name: impl Into<String>,
        sink: impl Fn(&str, &E, Sequence, &Failure) + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        if self.sinks.insert(name.clone(), Arc::new(sink)).is_some() {
            self.registered_twice.get_or_insert(name);
        }
        self
    }
}

/// A registered reading handler.
struct Dyn<E>(Box<dyn EventHandler<E> + Send>);
impl<E> EventHandler<E> for Dyn<E> {
    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A pool worker's handler, made on its own thread.
struct Local<E>(Box<dyn EventHandler<E>>);
impl<E> EventHandler<E> for Local<E> {
    #[inline]
    fn on_event(&mut self, event: &E, sequence: Sequence, end_of_batch: bool) {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A registered mutating handler.
struct DynMut<E>(Box<dyn EventHandlerMut<E> + Send>);
impl<E> EventHandlerMut<E> for DynMut<E> {
    #[inline]
    fn on_event(&mut self, event: &mut E, sequence: Sequence, end_of_batch: bool) {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A registered fallible handler, its error boxed.
struct DynTry<E>(Box<dyn TryEventHandler<E, Error = BoxError> + Send>);
impl<E> TryEventHandler<E> for DynTry<E> {
    type Error = BoxError;
    #[inline]
    fn on_event(
        &mut self,
        event: &E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), BoxError> {
        self.0.on_event(event, sequence, end_of_batch)
    }
    forward_lifecycle!();
}

/// A fallible handler whose error type is erased into [`BoxError`].
struct Erased<H>(H);
impl<E, H: TryEventHandler<E>> TryEventHandler<E> for Erased<H> {
    type Error = BoxError;
    #[inline]
    fn on_event(
        &mut self,
        event: &E,
        sequence: Sequence,
        end_of_batch: bool,
    ) -> Result<(), BoxError> {
        self.0
            .on_event(event, sequence, end_of_batch)
            .map_err(Into::into)
    }
    forward_lifecycle!();
}

/// The producer of a bus built from a [`BusConfig`]: single or multi, as the
/// description says. It implements [`Publisher`], so publishing code is the
/// same for both; [`try_clone`](AnyProducer::try_clone) gives more handles
/// of a multi-producer bus.
#[must_use = "dropping the producer shuts the bus down: it drains and joins every stage"]
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyProducer<E: Send + Sync + 'static> {
    /// `producer = "single"`.
    Single(SingleProducer<E, AnyStrategy>),
    /// `producer = "multi"`.
    Multi(MultiProducer<E, AnyStrategy>),
}

impl<E: Send + Sync + 'static> AnyProducer<E> {
    /// Another handle on a multi-producer bus (to publish from another
    /// thread); `None` for a single-producer bus, which has exactly one.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            Self::Single(_) => None,
            Self::Multi(p) => Some(Self::Multi(p.clone())),
        }
    }
}

/// Calls `$call` on whichever producer `$self` holds.
macro_rules! either {
    ($self:expr, $p:ident => $call:expr) => {
        match $self {
            AnyProducer::Single($p) => $call,
            AnyProducer::Multi($p) => $call,
        }
    };
}

impl<E: Send + Sync + 'static> crate::producer::sealed::Sealed for AnyProducer<E> {
    fn bus_id(&self) -> u64 {
        either!(self, p => crate::producer::sealed::Sealed::bus_id(p))
    }
}

/// The producer calls, on whichever producer it holds (no trait import
/// needed); each is [`Producer`](crate::Producer)'s call of the same name.
impl<E: Send + Sync + 'static> AnyProducer<E> {
    /// Writes the next event with `f` and publishes it, waiting while the
    /// ring is full.
    ///
    /// # Errors
    /// `Halted` or `Closed`; `f` is then not called.
    pub fn publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, PublishError> {
        either!(self, p => p.publish(f))
    }
    /// Like [`publish`](Self::publish), failing at once on a full ring.
    ///
    /// # Errors
    /// `Full`, `Halted` or `Closed`; `f` is then not called.
    pub fn try_publish(&mut self, f: impl FnOnce(&mut E)) -> Result<Sequence, TryPublishError> {
        either!(self, p => p.try_publish(f))
    }
    /// Like [`publish`](Self::publish), waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `Halted` or `Closed`; `f` is then not called.
    pub fn publish_timeout(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        either!(self, p => p.publish_timeout(timeout, f))
    }

    /// The old name of [`publish_timeout`](Self::publish_timeout).
    ///
    /// # Errors
    /// As for `publish_timeout`.
    #[deprecated(note = "renamed `publish_timeout`")]
    #[doc(hidden)]
    pub fn try_publish_for(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut E),
    ) -> Result<Sequence, TryPublishError> {
        self.publish_timeout(timeout, f)
    }
    /// Claims `n` slots, lets `f` write them, publishes them with one store.
    ///
    /// # Errors
    /// `BatchTooLarge`, `Halted` or `Closed`; `f` is then not called.
    pub fn batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, PublishError> {
        either!(self, p => p.batch_publish(n, f))
    }
    /// Like [`batch_publish`](Self::batch_publish), failing at once when
    /// fewer than `n` slots are free.
    ///
    /// # Errors
    /// `Full` (with the missing slots), `BatchTooLarge`, `Halted` or
    /// `Closed`; `f` is then not called.
    pub fn try_batch_publish(
        &mut self,
        n: usize,
        f: impl FnOnce(BatchMut<'_, E>),
    ) -> Result<Sequence, TryPublishError> {
        either!(self, p => p.try_batch_publish(n, f))
    }
    /// Slots free right now (a racy snapshot).
    pub fn remaining_capacity(&self) -> usize {
        either!(self, p => p.remaining_capacity())
    }
    /// Ring capacity.
    pub fn capacity(&self) -> usize {
        either!(self, p => p.capacity())
    }
    /// The highest sequence claimed (-1 before the first).
    pub fn cursor(&self) -> Sequence {
        either!(self, p => p.cursor())
    }
    /// The highest sequence every gating consumer has passed.
    pub fn minimum_gating_sequence(&self) -> Sequence {
        either!(self, p => p.minimum_gating_sequence())
    }
    /// A [`Metrics`] handle on the bus.
    pub fn metrics(&self) -> Metrics {
        either!(self, p => p.metrics())
    }
    /// Adds a managed handler at runtime, on its own thread.
    ///
    /// # Errors
    /// A halted or closed bus, a bus with a mutating stage, or a thread the
    /// OS refused to start.
    pub fn subscribe_with<H>(&self, handler: H) -> Result<Subscription<H>, SubscribeError>
    where
        H: EventHandler<E> + Send + 'static,
    {
        either!(self, p => p.subscribe_with(handler))
    }
    /// Stops every stage without draining.
    pub fn halt(&self) {
        either!(self, p => p.halt())
    }
    /// Drains every published event through every stage and joins the
    /// stage threads.
    ///
    /// # Errors
    /// A stage that failed, or a call from a handler of this bus.
    pub fn shutdown(self) -> Result<ShutdownReport, ShutdownError> {
        either!(self, p => p.shutdown())
    }
    /// Like [`shutdown`](Self::shutdown), halting after `timeout`.
    ///
    /// # Errors
    /// `TimedOut`, or as for [`shutdown`](Self::shutdown).
    pub fn shutdown_timeout(self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        either!(self, p => p.shutdown_timeout(timeout))
    }
}

crate::producer::delegate_producer!(impl<E> for AnyProducer<E> where E: Send + Sync + 'static);
