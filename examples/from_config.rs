//! Builds a bus from a JSON file read with serde: capacity, producer kind,
//! wait strategy, stages with their dependencies, thread names and pinning.
//! A bad file gets an error that names the field and the fix.
//!
//! ```sh
//! cargo run --example from_config                          # examples/bus.json
//! cargo run --example from_config -- examples/bad_bus.json # shows the errors
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringbus::{Builder, Sequence, Sequencer, StageId, WaitStrategy};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Ring size, a power of two.
    capacity: usize,
    producer: ProducerKind,
    /// Producer threads (multi only).
    #[serde(default = "one")]
    producers: u64,
    #[serde(default = "default_events")]
    events_per_producer: u64,
    wait_strategy: Strategy,
    stages: Vec<Stage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ProducerKind {
    Single,
    Multi,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Strategy {
    BusySpin,
    BusySpinWithHint,
    Yielding,
    Sleeping,
    Blocking,
    PhasedBackoff,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stage {
    name: String,
    /// Names of earlier stages this one waits for; none means the ring.
    #[serde(default)]
    after: Vec<String>,
    pin_core: Option<usize>,
}

fn one() -> u64 {
    1
}

fn default_events() -> u64 {
    100_000
}

type Counts = Vec<(String, Arc<AtomicU64>)>;

/// Adds the configured stages; names in `after` must be earlier stages.
fn add_stages<S: Sequencer, W: WaitStrategy>(
    mut builder: Builder<u64, S, W>,
    stages: &[Stage],
) -> Result<(Builder<u64, S, W>, Counts), String> {
    let mut ids: Vec<(String, StageId)> = Vec::new();
    let mut counts = Counts::new();
    for (i, stage) in stages.iter().enumerate() {
        if ids.iter().any(|(n, _)| *n == stage.name) {
            return Err(format!(
                "stages[{i}].name: `{}` is used twice; give every stage its own name",
                stage.name
            ));
        }
        let mut after = Vec::new();
        for dep in &stage.after {
            match ids.iter().find(|(n, _)| n == dep) {
                Some((_, id)) => after.push(*id),
                None => {
                    let known: Vec<&str> = ids.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(format!(
                        "stages[{i}].after: `{dep}` is not an earlier stage; \
                         list stages before the ones that wait for them (earlier stages: {known:?})"
                    ));
                }
            }
        }
        builder = builder.after(&after).thread_name(stage.name.clone());
        if let Some(core) = stage.pin_core {
            builder = builder.pin_at_core(core);
        }
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        builder = builder.handle_events_with(move |_v: &u64, _s: Sequence, _eob: bool| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        ids.push((
            stage.name.clone(),
            builder.last_stage().expect("just added"),
        ));
        counts.push((stage.name.clone(), count));
    }
    Ok((builder, counts))
}

fn run<W: WaitStrategy>(cfg: &Config, strategy: W) -> Result<(), String> {
    let total = match cfg.producer {
        ProducerKind::Single => {
            let (builder, counts) = add_stages(
                ringbus::single_producer(cfg.capacity, || 0u64, strategy),
                &cfg.stages,
            )?;
            let mut producer = builder
                .try_build()
                .map_err(|e| format!("capacity/stages: {e}"))?;
            for i in 0..cfg.events_per_producer {
                producer.publish(|v| *v = i).map_err(|e| e.to_string())?;
            }
            producer.shutdown().map_err(|e| e.to_string())?;
            (cfg.events_per_producer, counts)
        }
        ProducerKind::Multi => {
            let (builder, counts) = add_stages(
                ringbus::multi_producer(cfg.capacity, || 0u64, strategy),
                &cfg.stages,
            )?;
            let producer = builder
                .try_build()
                .map_err(|e| format!("capacity/stages: {e}"))?;
            let threads: Vec<_> = (0..cfg.producers)
                .map(|_| {
                    let p = producer.clone();
                    let n = cfg.events_per_producer;
                    std::thread::spawn(move || {
                        for i in 0..n {
                            p.publish(|v| *v = i).expect("bus halted");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join()
                    .map_err(|_| "a producer thread panicked".to_string())?;
            }
            producer.shutdown().map_err(|e| e.to_string())?;
            (cfg.events_per_producer * cfg.producers, counts)
        }
    };
    let (events, counts) = total;
    println!(
        "built a {:?}-producer bus of {} slots with {:?}; {events} events",
        cfg.producer, cfg.capacity, cfg.wait_strategy
    );
    for (name, count) in counts {
        let seen = count.load(Ordering::Relaxed);
        println!("  stage {name:<8} handled {seen}");
        if seen != events {
            return Err(format!("stage {name} handled {seen} of {events}"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bus.json").to_string());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg: Config = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{path}: {e}");
            eprintln!("  (fields: capacity, producer, producers, events_per_producer, wait_strategy, stages)");
            return ExitCode::from(2);
        }
    };
    if cfg.producers == 0 || (matches!(cfg.producer, ProducerKind::Single) && cfg.producers != 1) {
        eprintln!("{path}: producers: a single-producer bus has exactly 1 producer; use \"producer\": \"multi\" for more");
        return ExitCode::from(2);
    }
    let result = match cfg.wait_strategy {
        Strategy::BusySpin => run(&cfg, ringbus::BusySpin),
        Strategy::BusySpinWithHint => run(&cfg, ringbus::BusySpinWithHint),
        Strategy::Yielding => run(&cfg, ringbus::Yielding::default()),
        Strategy::Sleeping => run(&cfg, ringbus::Sleeping::default()),
        Strategy::Blocking => run(&cfg, ringbus::Blocking),
        Strategy::PhasedBackoff => run(&cfg, ringbus::PhasedBackoff::default()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::from(2)
        }
    }
}
