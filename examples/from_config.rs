//! Builds a bus from a description file (TOML or JSON, by extension) with
//! `ringbus::config`: capacity, producer kind, wait strategy, stages with
//! their dependencies, pools, failure policies and pinning. The publishing
//! code is written once for single and multi producers (`Publisher`). A bad
//! file gets an error that names the field and the fix.
//!
//! ```sh
//! cargo run --features serde --example from_config                          # examples/bus.toml
//! cargo run --features serde --example from_config -- examples/bus.json
//! cargo run --features serde --example from_config -- examples/bad_bus.json # shows the error
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringbus::config::{BusConfig, Handlers};
use ringbus::{Publisher, Sequence};
use serde::Deserialize;

/// The file: the bus, and how this program drives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Publishing threads (more than 1 needs `producer = "multi"`).
    #[serde(default = "one")]
    producers: u64,
    #[serde(default = "default_events")]
    events_per_producer: u64,
    bus: BusConfig,
}

fn one() -> u64 {
    1
}

fn default_events() -> u64 {
    100_000
}

/// Reads the file with the parser its extension names.
fn read(path: &str) -> Result<File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    // The whole file goes through serde_path_to_error, as
    // `BusConfig::from_deserializer` does, so errors name the field.
    let file: Result<File, String> = if path.ends_with(".toml") {
        serde_path_to_error::deserialize(toml::Deserializer::new(&text))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    } else {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    };
    let file = file?;
    if file.producers == 0
        || (file.producers > 1 && file.bus.producer == ringbus::config::ProducerKind::Single)
    {
        return Err(String::from(
            "producers: a single-producer bus has exactly 1 producer; \
             set bus.producer = \"multi\" for more",
        ));
    }
    Ok(file)
}

/// Publishes `0..n` through any producer.
fn publish_all(producer: &mut impl Publisher<u64>, n: u64) -> Result<(), String> {
    for i in 0..n {
        producer.publish(|v| *v = i).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn run(file: &File) -> Result<(), String> {
    // A counting handler for every stage the file names (a pool's workers
    // share one count).
    let mut handlers = Handlers::new();
    let mut counts = Vec::new();
    for stage in &file.bus.stages {
        let count = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&count);
        let name = stage.handler.clone().unwrap_or_else(|| stage.name.clone());
        handlers = if stage.workers.is_some() {
            handlers.pool(name, move |_worker| {
                let c = Arc::clone(&c);
                move |_v: &u64, _s: Sequence, _eob: bool| {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            })
        } else {
            handlers.handler(name, move |_v: &u64, _s: Sequence, _eob: bool| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        };
        counts.push((stage.name.clone(), count));
    }
    let mut producer = file
        .bus
        .build(|| 0u64, handlers)
        .map_err(|e| e.to_string())?;
    let threads: Vec<_> = (1..file.producers)
        .map(|_| {
            let mut p = producer.try_clone().expect("checked: a multi-producer bus");
            let n = file.events_per_producer;
            std::thread::spawn(move || publish_all(&mut p, n))
        })
        .collect();
    publish_all(&mut producer, file.events_per_producer)?;
    for t in threads {
        t.join().map_err(|_| "a producer thread panicked")??;
    }
    producer.shutdown().map_err(|e| e.to_string())?;

    let events = file.events_per_producer * file.producers;
    println!(
        "built a {:?}-producer bus of {} slots with {:?}; {events} events",
        file.bus.producer, file.bus.capacity, file.bus.wait_strategy
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
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bus.toml").to_string());
    match read(&path).and_then(|file| run(&file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::from(2)
        }
    }
}
