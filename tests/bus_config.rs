//! Buses described in TOML and JSON (`ringbus::config`, feature `serde`):
//! every field reaches the bus, and every bad description is refused with
//! the path of what is wrong.
#![cfg(feature = "serde")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use ringbus::config::{AnyProducer, BusConfig, ConfigError, Handlers, ProducerKind, WaitConfig};
use ringbus::{AnyStrategy, Failure, Sequence, Sleeping};

fn from_toml(text: &str) -> Result<BusConfig, ConfigError> {
    BusConfig::from_deserializer(toml::Deserializer::new(text))
}

fn from_json(text: &str) -> Result<BusConfig, ConfigError> {
    BusConfig::from_deserializer(&mut serde_json::Deserializer::from_str(text))
}

const ORDERS_TOML: &str = r#"
capacity = 16
producer = "multi"
wait_strategy = { kind = "sleeping", spin_tries = 0, yield_tries = 10, sleep_us = 1 }

[[stages]]
name = "enrich"

[[stages]]
name = "risk"
after = ["enrich"]
workers = 3

[[stages]]
name = "audit"
after = ["enrich"]
handler = "count"

[[stages]]
name = "book"
after = ["risk", "audit"]
timeout_ms = 10_000
on_failure = { retries = 1, backoff_ms = 0, then = { dead-letter = "dlq" } }
"#;

const ORDERS_JSON: &str = r#"{
    "capacity": 16,
    "producer": "multi",
    "wait_strategy": { "kind": "sleeping", "spin_tries": 0, "yield_tries": 10, "sleep_us": 1 },
    "stages": [
        { "name": "enrich" },
        { "name": "risk", "after": ["enrich"], "workers": 3 },
        { "name": "audit", "after": ["enrich"], "handler": "count" },
        { "name": "book", "after": ["risk", "audit"], "timeout_ms": 10000,
          "on_failure": { "retries": 1, "backoff_ms": 0, "then": { "dead-letter": "dlq" } } }
    ]
}"#;

#[derive(Debug, Default, Clone)]
struct Order {
    id: u64,
    enriched: bool,
}

/// Runs the orders description: 3 producers × N events through a mutating
/// stage, a pool of 3, a counting stage and a fallible book whose failures
/// go to a dead-letter sink. Checks every count.
fn run_orders(config: &BusConfig) {
    const PER_PRODUCER: u64 = if cfg!(miri) { 20 } else { 2_000 };
    let risk_seen = Arc::new(AtomicU64::new(0));
    let counted = Arc::new(AtomicU64::new(0));
    let booked = Arc::new(Mutex::new(Vec::new()));
    let (dead_tx, dead_rx) = mpsc::channel();
    let dead_tx = Mutex::new(dead_tx);
    let (r, c, b) = (
        Arc::clone(&risk_seen),
        Arc::clone(&counted),
        Arc::clone(&booked),
    );
    let handlers = Handlers::new()
        .mutating("enrich", |o: &mut Order, _: Sequence, _: bool| {
            o.enriched = true
        })
        .pool("risk", move |_worker| {
            let r = Arc::clone(&r);
            move |o: &Order, _: Sequence, _: bool| {
                assert!(o.enriched, "risk saw an order before enrich did");
                r.fetch_add(1, Ordering::Relaxed);
            }
        })
        .handler("count", move |o: &Order, _: Sequence, _: bool| {
            assert!(o.enriched);
            c.fetch_add(1, Ordering::Relaxed);
        })
        .fallible("book", move |o: &Order, _: Sequence, _: bool| {
            if o.id % 100 == 42 {
                return Err(std::io::Error::other(format!("order {} refused", o.id)));
            }
            b.lock().unwrap().push(o.id);
            Ok(())
        })
        .dead_letter_sink("dlq", move |stage, o: &Order, _, failure| {
            let io = failure
                .downcast_ref::<std::io::Error>()
                .map(|e| e.to_string());
            dead_tx
                .lock()
                .unwrap()
                .send((stage.to_owned(), o.id, io))
                .unwrap();
        });
    let producer = config.build(Order::default, handlers).unwrap();
    assert!(matches!(producer, AnyProducer::Multi(_)));
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let mut p = producer.try_clone().expect("a multi producer clones");
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    p.publish(|o| o.id = t * 1_000_000 + i).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = producer.shutdown().unwrap();
    let total = 3 * PER_PRODUCER;
    assert_eq!(
        risk_seen.load(Ordering::Relaxed),
        total,
        "pool: each event once"
    );
    assert_eq!(counted.load(Ordering::Relaxed), total);
    let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["enrich", "risk-0", "risk-1", "risk-2", "audit", "book"]
    );
    let dead: Vec<_> = dead_rx.try_iter().collect();
    let refused = (0..3)
        .map(|_| (0..PER_PRODUCER).filter(|i| i % 100 == 42).count())
        .sum::<usize>();
    assert_eq!(dead.len(), refused);
    for (stage, id, io) in &dead {
        assert_eq!(stage, "book");
        assert_eq!(io.as_deref(), Some(format!("order {id} refused").as_str()));
    }
    let book = report.stages.last().unwrap();
    assert_eq!(book.dead_lettered as usize, refused);
    assert_eq!(book.retried as usize, refused, "one retry each");
    // Per-producer order is kept through the graph.
    let booked = booked.lock().unwrap();
    assert_eq!(booked.len() + refused, total as usize);
    for t in 0..3u64 {
        let mine: Vec<u64> = booked
            .iter()
            .copied()
            .filter(|id| id / 1_000_000 == t)
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "producer {t} out of order"
        );
    }
}

#[test]
fn a_toml_description_builds_the_bus_it_describes() {
    let config = from_toml(ORDERS_TOML).unwrap();
    assert_eq!(config.producer, ProducerKind::Multi);
    assert_eq!(
        config.wait_strategy.strategy(),
        AnyStrategy::Sleeping(Sleeping::new(0, 10, std::time::Duration::from_micros(1)))
    );
    run_orders(&config);
}

#[test]
fn a_json_description_builds_the_same_bus() {
    let json = from_json(ORDERS_JSON).unwrap();
    assert_eq!(json, from_toml(ORDERS_TOML).unwrap());
    run_orders(&json);
}

#[test]
fn a_description_serializes_back_to_itself() {
    let config = from_toml(ORDERS_TOML).unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(from_json(&json).unwrap(), config);
    let toml = toml::to_string(&config).unwrap();
    assert_eq!(from_toml(&toml).unwrap(), config);
}

#[test]
fn every_wait_strategy_by_name_and_by_table_runs() {
    let forms = [
        ("\"busy-spin-with-hint\"", "busy-spin-with-hint"),
        ("\"yielding\"", "yielding"),
        ("{ kind = \"yielding\", spin_tries = 3 }", "yielding"),
        ("\"sleeping\"", "sleeping"),
        ("\"blocking\"", "blocking"),
        ("\"phased-backoff\"", "phased-backoff"),
        (
            "{ kind = \"phased-backoff\", spin_us = 1, yield_us = 1, sleep_us = 1 }",
            "phased-backoff",
        ),
        ("{ kind = \"blocking\" }", "blocking"),
    ];
    for producer in ["single", "multi"] {
        for (strategy, kind) in forms {
            let text = format!(
                "capacity = 4\nproducer = \"{producer}\"\nwait_strategy = {strategy}\n\
                 [[stages]]\nname = \"a\"\n[[stages]]\nname = \"b\"\nafter = [\"a\"]\n"
            );
            let config = from_toml(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let described = serde_json::to_value(config.wait_strategy).unwrap();
            assert_eq!(described["kind"], kind);
            let seen = Arc::new(AtomicU64::new(0));
            let s = Arc::clone(&seen);
            let handlers = Handlers::new()
                .handler("a", |_: &u64, _: Sequence, _: bool| {})
                .handler("b", move |_: &u64, _: Sequence, _: bool| {
                    s.fetch_add(1, Ordering::Relaxed);
                });
            let mut p = config.build(|| 0u64, handlers).unwrap();
            // A ring of 4 laps many times.
            for i in 0..100 {
                p.publish(|e| *e = i).unwrap();
            }
            p.batch_publish(3, |slots| slots.for_each(|e| *e = 1))
                .unwrap();
            p.shutdown().unwrap();
            assert_eq!(seen.load(Ordering::Relaxed), 103, "{text}");
        }
    }
    assert_eq!(WaitConfig::default().strategy(), AnyStrategy::Blocking);
}

fn noop_handlers(names: &[&str]) -> Handlers<u64> {
    names.iter().fold(Handlers::new(), |h, name| {
        h.handler(*name, |_: &u64, _: Sequence, _: bool| {})
    })
}

/// Builds `text` (TOML) with handlers `names`; returns the error.
fn refused(text: &str, handlers: Handlers<u64>) -> ConfigError {
    match from_toml(text) {
        Err(e) => e,
        Ok(config) => match config.build(|| 0, handlers) {
            Err(e) => e,
            Ok(p) => {
                drop(p);
                panic!("accepted:\n{text}")
            }
        },
    }
}

#[test]
fn parse_errors_name_the_field_path() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\nworkers = \"two\"\n",
            "stages[0].workers",
            "invalid type",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\nafer = [\"b\"]\n",
            "stages[0].afer",
            "unknown field `afer`",
        ),
        (
            "capacity = 8\nwait_strategy = \"spinning\"\n[[stages]]\nname = \"a\"\n",
            "wait_strategy",
            "unknown variant `spinning`",
        ),
        (
            "capacity = 8\nproducer = \"many\"\n[[stages]]\nname = \"a\"\n",
            "producer",
            "unknown variant `many`",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\non_failure = { then = \"retry\" }\n",
            "stages[0].on_failure.then",
            "unknown variant `retry`",
        ),
    ];
    for (text, path, message) in cases {
        let err = from_toml(text).unwrap_err();
        assert_eq!(err.path(), path, "{text}: {err}");
        assert!(err.to_string().contains(message), "{text}: {err}");
    }
    let err = from_json(r#"{ "stages": [] }"#).unwrap_err();
    assert!(
        err.to_string().contains("missing field `capacity`"),
        "{err}"
    );
    let err = from_json(
        r#"{ "capacity": 8, "stages": [], "wait_strategy": { "kind": "sleeping", "sleep": 1 } }"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `sleep`"), "{err}");
    assert_eq!(err.path(), "wait_strategy.sleep", "{err}");
    // A field of the wrong type is named by its path, not the table's.
    let err = from_json(
        r#"{ "capacity": 8, "stages": [], "wait_strategy": { "kind": "sleeping", "sleep_us": "1" } }"#,
    )
    .unwrap_err();
    assert_eq!(err.path(), "wait_strategy.sleep_us", "{err}");
    assert!(err.to_string().contains("invalid type"), "{err}");
    // A field another kind takes, and an unknown kind in a table.
    let err = from_json(
        r#"{ "capacity": 8, "stages": [], "wait_strategy": { "kind": "yielding", "sleep_us": 1 } }"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown field `sleep_us`, expected one of `spin_tries` for `yielding`"),
        "{err}"
    );
    let err = from_json(r#"{ "capacity": 8, "stages": [], "wait_strategy": { "kind": "spin" } }"#)
        .unwrap_err();
    assert!(err.to_string().contains("unknown variant `spin`"), "{err}");
    // Fields left out keep their defaults; a phased backoff without
    // `sleep_us` parks.
    let config = from_json(
        r#"{ "capacity": 8, "stages": [], "wait_strategy": { "kind": "phased-backoff", "spin_us": 3 } }"#,
    )
    .unwrap();
    assert_eq!(
        config.wait_strategy,
        WaitConfig::PhasedBackoff {
            spin_us: 3,
            yield_us: 100,
            sleep_us: None
        }
    );
    // A strategy without fields refuses a stray one too.
    for kind in ["blocking", "busy-spin", "busy-spin-with-hint"] {
        let text = format!(
            r#"{{ "capacity": 8, "stages": [], "wait_strategy": {{ "kind": "{kind}", "sleep_us": 1 }} }}"#
        );
        let err = from_json(&text).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `sleep_us`"),
            "{kind}: {err}"
        );
    }
}

#[test]
fn names_that_do_not_resolve_are_refused_with_their_path() {
    let two = "capacity = 8\n[[stages]]\nname = \"a\"\n[[stages]]\nname = \"b\"\n";
    let cases: Vec<(String, Handlers<u64>, &str, &str)> = vec![
        (
            format!("{two}after = [\"c\"]\n"),
            noop_handlers(&["a", "b"]),
            "stages[1].after[0]",
            "no earlier stage named `c`",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\nafter = [\"a\"]\n".into(),
            noop_handlers(&["a"]),
            "stages[0].after[0]",
            "no earlier stage named `a`",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\n[[stages]]\nname = \"a\"\n".into(),
            noop_handlers(&["a"]),
            "stages[1].name",
            "names two stages",
        ),
        (
            two.into(),
            noop_handlers(&["a"]),
            "stages[1].name",
            "no handler registered as `b`",
        ),
        (
            format!("{two}handler = \"a\"\n"),
            noop_handlers(&["a"]),
            "stages[1].handler",
            "already used by an earlier stage",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\nworkers = 2\n".into(),
            noop_handlers(&["a"]),
            "stages[0].workers",
            "not registered as a pool",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\n".into(),
            Handlers::new().pool("a", |_| |_: &u64, _: Sequence, _: bool| {}),
            "stages[0].workers",
            "registered as a pool",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\non_failure = { then = { dead-letter = \"dlq\" } }\n".into(),
            noop_handlers(&["a"]),
            "stages[0].on_failure.then",
            "no dead-letter sink registered as `dlq`",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\n".into(),
            noop_handlers(&["a", "a"]),
            "(handlers)",
            "registered twice",
        ),
        (
            "capacity = 8\n[[stages]]\nname = \"a\"\ntimeout_ms = 0\n".into(),
            noop_handlers(&["a"]),
            "stages[0].timeout_ms",
            "at least 1",
        ),
    ];
    for (text, handlers, path, message) in cases {
        let err = refused(&text, handlers);
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        assert_eq!(err.path(), path, "{text}: {err}");
        assert!(err.to_string().contains(message), "{text}: {err}");
    }
}

#[test]
fn builder_errors_point_at_the_field() {
    let err = refused(
        "capacity = 1000\n[[stages]]\nname = \"a\"\n",
        noop_handlers(&["a"]),
    );
    assert_eq!(err.path(), "capacity");
    assert!(err.to_string().contains("such as 1024"), "{err}");
    assert!(std::error::Error::source(&err).is_some());

    let err = refused(
        "capacity = 8\n[[stages]]\nname = \"a\"\n[[stages]]\nname = \"b\"\npin_core = 4096\n",
        noop_handlers(&["a", "b"]),
    );
    assert_eq!(err.path(), "stages[1].pin_core", "{err}");

    let err = refused(
        "capacity = 8\n[[stages]]\nname = \"a\"\nworkers = 0\n",
        Handlers::new().pool("a", |_| |_: &u64, _: Sequence, _: bool| {}),
    );
    assert_eq!(err.path(), "stages[0].workers", "{err}");
    let err = refused(
        "capacity = 8\n[[stages]]\nname = \"a\"\nworkers = 100000\n",
        Handlers::new().pool("a", |_| |_: &u64, _: Sequence, _: bool| {}),
    );
    assert_eq!(err.path(), "stages[0].workers", "{err}");
    assert!(err.to_string().contains("at most 1024"), "{err}");

    // A mutating stage beside a reader.
    let err = refused(
        "capacity = 8\n[[stages]]\nname = \"m\"\n[[stages]]\nname = \"r\"\n",
        Handlers::new()
            .mutating("m", |_: &mut u64, _: Sequence, _: bool| {})
            .handler("r", |_: &u64, _: Sequence, _: bool| {}),
    );
    assert!(matches!(err, ConfigError::Build { .. }), "{err:?}");
    assert!(err.to_string().contains("and_then()"), "{err}");
    assert_eq!(err.path(), "stages[0].name", "{err}");

    // A name a thread cannot have: an error, not a panic at spawn.
    let config = from_json(r#"{ "capacity": 8, "stages": [ { "name": "a\u0000b" } ] }"#).unwrap();
    let err = config.build(|| 0u64, noop_handlers(&["a\0b"])).unwrap_err();
    assert_eq!(err.path(), "stages[0].name", "{err}");
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn a_failed_stage_from_a_description_reports_the_typed_error() {
    let config = from_json(r#"{ "capacity": 4, "stages": [ { "name": "f" } ] }"#).unwrap();
    let handlers = Handlers::new().fallible("f", |e: &u64, _: Sequence, _: bool| {
        if *e == 3 {
            Err(std::io::Error::other("three"))
        } else {
            Ok(())
        }
    });
    let mut p = config.build(|| 0u64, handlers).unwrap();
    for i in 0..10 {
        if p.publish(|e| *e = i).is_err() {
            break;
        }
    }
    let err = p.shutdown().unwrap_err();
    let ringbus::ShutdownError::StageFailed(report) = err else {
        panic!("expected the failure, got {err:?}");
    };
    let failure = report.stages[0].failure.as_ref().unwrap();
    assert!(matches!(failure, Failure::Error(_)));
    assert_eq!(
        failure
            .downcast_ref::<std::io::Error>()
            .unwrap()
            .to_string(),
        "three"
    );
}
