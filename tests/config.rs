//! Bad configuration gets a typed error whose message names the fix.

mod common;

use common::Event;
use ringbus::{BuildError, BusySpin, Sequence};

fn noop(_e: &Event, _s: Sequence, _b: bool) {}

#[test]
fn capacity_zero_or_not_a_power_of_two() {
    for capacity in [0, 3, 1000] {
        let err = ringbus::single_producer(capacity, Event::default, BusySpin)
            .handle_events_with(noop)
            .try_build()
            .unwrap_err();
        assert!(matches!(err, BuildError::Capacity { capacity: c } if c == capacity));
        assert!(err.to_string().contains("power of two"), "{err}");
    }
    let err = ringbus::multi_producer(1000, Event::default, BusySpin)
        .try_build()
        .unwrap_err();
    assert!(err.to_string().contains("such as 1024"), "{err}");
}

#[test]
fn capacity_too_large_is_an_error_not_a_panic_or_an_abort() {
    // Above the largest ring (and 2^63 slots of 8 bytes overflow a size).
    for capacity in [ringbus::MAX_CAPACITY * 2, 1 << (usize::BITS - 1)] {
        let err = ringbus::single_producer(capacity, || 0u64, BusySpin)
            .handle_events_with(|_: &u64, _: Sequence, _: bool| {})
            .try_build()
            .unwrap_err();
        assert!(matches!(err, BuildError::Capacity { capacity: c } if c == capacity));
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(err.to_string().contains("smaller power of two"), "{err}");
    }
    // Events of 1 MiB: 2^32 of them (4 PiB) are more than the allocator
    // gives, an error rather than an abort (nothing is filled). Not under
    // Miri or ThreadSanitizer, whose allocators stop the process instead.
    if usize::BITS == 64 && !cfg!(miri) && !cfg!(ringbus_tsan) {
        let err = ringbus::multi_producer(ringbus::MAX_CAPACITY, || [0u8; 1 << 20], BusySpin)
            .try_build()
            .unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }
    // Not a power of two and above the largest: the suggestion is one
    // that is allowed.
    if usize::BITS == 64 {
        let err = ringbus::multi_producer(ringbus::MAX_CAPACITY + 1, || 0u8, BusySpin)
            .try_build()
            .unwrap_err();
        let largest = format!("such as {}", ringbus::MAX_CAPACITY);
        assert!(err.to_string().contains(&largest), "{err}");
    }
    // Zero-sized events: a ring above the largest is refused at once, not
    // filled with 2^33 calls of the factory.
    let err = ringbus::multi_producer(ringbus::MAX_CAPACITY * 2, || (), BusySpin)
        .try_build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Capacity { .. }), "{err}");
}

#[test]
fn capacity_one_is_allowed() {
    let mut p = ringbus::single_producer(1, Event::default, BusySpin)
        .handle_events_with(noop)
        .build();
    p.publish(|e| e.set(0)).unwrap();
}

#[test]
#[should_panic(expected = "not a power of two")]
fn build_panics_with_the_message() {
    let _ = ringbus::single_producer(6, Event::default, BusySpin).build();
}

#[test]
#[cfg_attr(miri, ignore = "Miri does not emulate sched_getaffinity")]
fn missing_core_names_the_available_ones() {
    let err = ringbus::single_producer(8, Event::default, BusySpin)
        .pin_at_core(100_000)
        .handle_events_with(noop)
        .try_build()
        .unwrap_err();
    match &err {
        BuildError::NoSuchCore {
            requested,
            available,
        } => {
            assert_eq!(*requested, 100_000);
            assert_eq!(available, ringbus::available_cores());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("available cores"), "{err}");
}

#[test]
#[cfg_attr(miri, ignore = "Miri does not emulate sched_setaffinity")]
fn pinning_to_an_available_core_works() {
    let core = ringbus::available_cores()[0];
    let (tx, rx) = std::sync::mpsc::channel();
    let mut p = ringbus::single_producer(8, Event::default, BusySpin)
        .pin_at_core(core)
        .handle_events_with(move |_e: &Event, _s: Sequence, _b: bool| {
            let _ = tx.send(core_affinity::get_core_ids().unwrap());
        })
        .build();
    p.publish(|e| e.set(0)).unwrap();
    let mask = rx.recv().unwrap();
    assert_eq!(mask.iter().map(|c| c.id).collect::<Vec<_>>(), vec![core]);
}

#[test]
fn stage_of_another_bus_is_refused() {
    let other = ringbus::single_producer(8, Event::default, BusySpin).handle_events_with(noop);
    let foreign = other.last_stage().unwrap();
    let err = ringbus::single_producer(8, Event::default, BusySpin)
        .handle_events_with(noop)
        .after(&[foreign])
        .handle_events_with(noop)
        .try_build()
        .unwrap_err();
    assert!(matches!(err, BuildError::ForeignStage { .. }), "{err:?}");
    assert!(err.to_string().contains("same builder"), "{err}");
    drop(other.build());
}

#[test]
fn mutating_stage_in_parallel_with_a_reader_is_refused() {
    let err = ringbus::single_producer(8, Event::default, BusySpin)
        .thread_name("enrich")
        .handle_events_with(|_e: &mut Event, _s: Sequence, _b: bool| {})
        .thread_name("audit")
        .handle_events_with(noop)
        .try_build()
        .unwrap_err();
    match &err {
        BuildError::ConcurrentMutation {
            mutating,
            concurrent,
        } => assert_eq!(
            (mutating.as_str(), concurrent.as_str()),
            ("enrich", "audit")
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("and_then()"), "{err}");

    // On a parallel branch of a diamond: refused too.
    let builder = ringbus::single_producer(8, Event::default, BusySpin).handle_events_with(noop);
    let a = builder.last_stage().unwrap();
    let err = builder
        .and_then()
        .handle_events_with(|_e: &mut Event, _s: Sequence, _b: bool| {})
        .after(&[a])
        .handle_events_with(noop)
        .try_build()
        .unwrap_err();
    assert!(matches!(err, BuildError::ConcurrentMutation { .. }));

    // Strictly between two readers: accepted.
    let p = ringbus::single_producer(8, Event::default, BusySpin)
        .handle_events_with(noop)
        .and_then()
        .handle_events_with(|_e: &mut Event, _s: Sequence, _b: bool| {})
        .and_then()
        .handle_events_with(noop)
        .handle_events_with(noop)
        .try_build();
    assert!(p.is_ok());
}

/// Issue #12, finding 9: a modifier with no handler after it used to be
/// dropped silently; now the build names it.
#[test]
fn modifier_without_a_handler_after_it_is_refused() {
    type B = ringbus::Builder<Event, ringbus::SingleProducerSequencer, BusySpin>;
    type Modifier = fn(B) -> B;
    let cases: [(&str, Modifier); 4] = [
        ("pin_at_core", |b| b.pin_at_core(0)),
        ("thread_name", |b| b.thread_name("x")),
        ("timeout", |b| b.timeout(std::time::Duration::from_secs(1))),
        ("on_failure", |b| {
            b.on_failure(ringbus::FailurePolicy::skip())
        }),
    ];
    for (name, modifier) in cases {
        let builder =
            ringbus::single_producer(8, Event::default, BusySpin).handle_events_with(noop);
        let err = modifier(builder).try_build().unwrap_err();
        assert!(
            matches!(err, BuildError::ModifierWithoutHandler { modifier } if modifier == name),
            "{err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert!(err.to_string().contains("no handler follows"), "{err}");
    }
    // Given before a handler, in any order with `and_then`, they apply.
    let p = ringbus::single_producer(8, Event::default, BusySpin)
        .handle_events_with(noop)
        .thread_name("named")
        .and_then()
        .handle_events_with(noop)
        .build();
    let report = p.shutdown().unwrap();
    assert_eq!(report.stages[1].name, "named");
}

#[test]
fn empty_pool_is_refused() {
    let err = ringbus::multi_producer(8, Event::default, BusySpin)
        .handle_events_with(noop)
        .handle_events_with_pool(0, |_i| noop)
        .try_build()
        .unwrap_err();
    assert!(matches!(err, BuildError::EmptyPool { stage: 1 }), "{err:?}");
    assert!(err.to_string().contains("at least 1"), "{err}");
}

#[test]
fn duplicate_stage_names_are_refused() {
    let err = ringbus::single_producer(8, Event::default, BusySpin)
        .thread_name("audit")
        .handle_events_with(noop)
        .thread_name("audit")
        .handle_events_with(noop)
        .try_build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::DuplicateName { name } if name == "audit"),
        "{err:?}"
    );
    assert!(err.to_string().contains("its own name"), "{err}");

    // Two pools under one prefix name their workers alike.
    let err = ringbus::multi_producer(8, Event::default, BusySpin)
        .thread_name("pool")
        .handle_events_with_pool(2, |_| noop)
        .thread_name("pool")
        .handle_events_with_pool(2, |_| noop)
        .try_build()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::DuplicateName { name } if name == "pool-0"),
        "{err:?}"
    );

    // Default names never collide with each other.
    let p = ringbus::single_producer(8, Event::default, BusySpin)
        .handle_events_with(noop)
        .handle_events_with(noop)
        .handle_events_with_pool(2, |_| noop)
        .handle_events_with_pool(2, |_| noop)
        .build();
    let names: Vec<String> = p
        .metrics()
        .snapshot()
        .stages
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
}
