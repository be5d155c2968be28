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
//! (``stages[2].on_failure.then: unknown variant `retry` ...``), a name that
//! does not resolve (``stages[1].after[0]: no earlier stage named `decod` ``),
//! or a bus the
//! builder refused (`capacity: ring capacity 1000 is not a power of two`).
//!
//! Handlers are called through a pointer (one indirect call per event): a
//! bus built in code avoids even that, and keeps the handlers' types for
//! [`ShutdownReport::take_handler`](crate::ShutdownReport::take_handler).

mod description;
mod error;
mod handlers;
mod producer;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserializer;

pub use description::{BusConfig, FailureConfig, ProducerKind, StageConfig, Then, WaitConfig};
pub use error::ConfigError;
pub use handlers::Handlers;
pub use producer::AnyProducer;

use crate::builder::{Builder, StageId};
use crate::error::BuildError;
use crate::fault::FailurePolicy;
use crate::sequencer::Sequencer;
use crate::wait_strategy::AnyStrategy;
use handlers::{Dyn, DynMut, DynTry, Entry, Local};

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
        // Each stage's id (a pool's stands for all its workers in `after`);
        // none when the builder refused the stage (an error it reports).
        let mut ids: Vec<(&str, Option<StageId>)> = Vec::with_capacity(self.stages.len());
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
                let Some(&(_, dep_id)) = ids.iter().find(|(name, _)| name == dep) else {
                    let earlier: Vec<&str> = ids.iter().map(|(name, _)| *name).collect();
                    return Err(ConfigError::invalid(
                        format!("stages[{i}].after[{j}]"),
                        format!(
                            "no earlier stage named `{dep}`; list a stage before the stages \
                             that wait for it (earlier stages: {earlier:?})"
                        ),
                    ));
                };
                after.extend(dep_id);
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
            let before = builder.last_stage();
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
            let id = builder.last_stage().filter(|&id| Some(id) != before);
            ids.push((stage.name.as_str(), id));
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
            BuildError::PoolTooLarge { workers, .. } => self
                .stages
                .iter()
                .position(|s| s.workers == Some(*workers))
                .map_or_else(
                    || String::from("stages"),
                    |i| format!("stages[{i}].workers"),
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
