//! The description of a bus, read and written with serde: [`BusConfig`],
//! its stages ([`StageConfig`]), wait strategy ([`WaitConfig`]) and failure
//! policies ([`FailureConfig`]).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::wait_strategy::{AnyStrategy, Fallback, PhasedBackoff, Sleeping, Yielding};

/// A bus description; see the [module docs](super).
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
    /// [`SingleProducer`](crate::SingleProducer): one publishing thread, no read-modify-write.
    #[default]
    Single,
    /// [`MultiProducer`](crate::MultiProducer): clone it for each publishing thread.
    Multi,
}

/// A wait strategy with its fields (durations in microseconds). In a
/// [`BusConfig`]'s `wait_strategy`, written as a name (each field at its
/// default) or as a table:
/// `{ kind = "sleeping", spin_tries = 0, yield_tries = 0, sleep_us = 1 }`;
/// on its own it reads only the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WaitConfig {
    /// [`BusySpin`](crate::BusySpin). (A table for a variant without
    /// fields that has any other field is refused.)
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

/// A wait strategy's table as written: every field any kind takes, read as
/// a plain struct so that an error inside it names its field's path
/// (`wait_strategy.sleep_us`); a tagged enum reads the table into a buffer
/// first, and its errors named only `wait_strategy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitTable {
    kind: String,
    spin_tries: Option<u32>,
    yield_tries: Option<u32>,
    sleep_us: Option<u64>,
    spin_us: Option<u64>,
    yield_us: Option<u64>,
}

impl WaitTable {
    /// The strategy, or why the table does not describe one.
    fn config(self) -> Result<WaitConfig, String> {
        let mut config = WaitConfig::named(&self.kind).ok_or_else(|| {
            format!(
                "unknown variant `{}`, expected one of {}",
                self.kind,
                ticked(STRATEGY_NAMES)
            )
        })?;
        let given = [
            ("spin_tries", self.spin_tries.is_some()),
            ("yield_tries", self.yield_tries.is_some()),
            ("sleep_us", self.sleep_us.is_some()),
            ("spin_us", self.spin_us.is_some()),
            ("yield_us", self.yield_us.is_some()),
        ];
        let takes: &[&str] = match &mut config {
            WaitConfig::BusySpin {} | WaitConfig::BusySpinWithHint {} | WaitConfig::Blocking {} => {
                &[]
            }
            WaitConfig::Yielding { spin_tries } => {
                *spin_tries = self.spin_tries.unwrap_or(*spin_tries);
                &["spin_tries"]
            }
            WaitConfig::Sleeping {
                spin_tries,
                yield_tries,
                sleep_us,
            } => {
                *spin_tries = self.spin_tries.unwrap_or(*spin_tries);
                *yield_tries = self.yield_tries.unwrap_or(*yield_tries);
                *sleep_us = self.sleep_us.unwrap_or(*sleep_us);
                &["spin_tries", "yield_tries", "sleep_us"]
            }
            WaitConfig::PhasedBackoff {
                spin_us,
                yield_us,
                sleep_us,
            } => {
                *spin_us = self.spin_us.unwrap_or(*spin_us);
                *yield_us = self.yield_us.unwrap_or(*yield_us);
                *sleep_us = self.sleep_us;
                &["spin_us", "yield_us", "sleep_us"]
            }
        };
        match given.iter().find(|(f, set)| *set && !takes.contains(f)) {
            None => Ok(config),
            Some((field, _)) if takes.is_empty() => Err(format!(
                "unknown field `{field}`: `{}` takes no fields",
                self.kind
            )),
            Some((field, _)) => Err(format!(
                "unknown field `{field}`, expected one of {} for `{}`",
                ticked(takes),
                self.kind
            )),
        }
    }
}

/// `a`, `b`, `c`: names as serde's messages list them.
fn ticked(names: &[&str]) -> String {
    let ticked: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    ticked.join(", ")
}

impl<'de> Deserialize<'de> for WaitConfig {
    /// Reads the table form (a name is read only inside a [`BusConfig`]).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WaitTable::deserialize(d)?
            .config()
            .map_err(de::Error::custom)
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
            WaitTable::deserialize(de::value::MapAccessDeserializer::new(map))?
                .config()
                .map_err(de::Error::custom)
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
    /// [`Handlers::pool`](super::Handlers::pool)); each event goes to one worker.
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

/// A [`FailurePolicy`](crate::FailurePolicy) in data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FailureConfig {
    /// Retries before `then` applies.
    #[serde(default)]
    pub retries: u32,
    /// The first retry's wait in milliseconds, doubled for each next one
    /// up to a second.
    #[serde(default)]
    pub backoff_ms: u64,
    /// `"halt"` (the default), `"skip"`, or `{ dead-letter = "sink" }` naming
    /// a sink registered with [`Handlers::dead_letter_sink`](super::Handlers::dead_letter_sink).
    #[serde(default)]
    pub then: Then,
}

/// What happens to a failed event once its retries are used up.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Then {
    /// [`FailurePolicy::halt`](crate::FailurePolicy::halt).
    #[default]
    Halt,
    /// [`FailurePolicy::skip`](crate::FailurePolicy::skip).
    Skip,
    /// [`FailurePolicy::dead_letter`](crate::FailurePolicy::dead_letter) into the sink
    /// registered under this name.
    DeadLetter(String),
}
