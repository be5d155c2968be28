//! The ingress's durable consumer on the server: deleted while the
//! ingress runs, or of a deliver policy the ingress cannot honour (found
//! by an audit, 2026-12-06; each test fails on 5ea607b: the ingress
//! retried for ever without a word, and published messages a
//! `LastPerSubject` durable never delivers). Real `nats-server`
//! processes, as in `bridge.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Ev;
use ringbus::{Blocking, Sequence};
use ringbus_nats::async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use ringbus_nats::async_nats::jetstream::stream;
use ringbus_nats::{Ingress, IngressError, IngressOptions, Link, LinkError, LinkOptions, Postcard};

type Seen = Arc<Mutex<Vec<Ev>>>;

fn link(urls: &str) -> Link {
    Link::connect(urls, LinkOptions::default()).expect("connect")
}

fn ensure_stream(link: &Link) {
    link.ensure_stream(stream::Config {
        name: "EV".into(),
        subjects: vec!["ev.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .expect("stream");
}

/// Publishes events `from..to` straight to JetStream, alternating
/// `ev.rc.a` (even `n`) and `ev.rc.b` (odd `n`), waiting for every ack.
fn publish_alternating(link: &Link, from: u64, to: u64) {
    let js = link.jetstream();
    link.handle().block_on(async {
        for n in from..to {
            let subject = if n % 2 == 0 { "ev.rc.a" } else { "ev.rc.b" };
            let payload = postcard::to_allocvec(&Ev {
                producer: (n % 2) as u32,
                n,
            })
            .unwrap();
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

fn recording_bus(capacity: usize, seen: &Seen) -> ringbus::SingleProducer<Ev, Blocking> {
    let record = Arc::clone(seen);
    ringbus::single_producer(capacity, Ev::default, Blocking)
        .handle_events_with(move |e: &Ev, _: Sequence, _: bool| record.lock().unwrap().push(*e))
        .build()
}

/// Waits up to `limit` until `done` or the ingress ended on its own.
fn wait_until<P: Send + 'static>(
    ingress: &Ingress<P>,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline && !ingress.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An operator deletes the ingress's durable consumer while it
/// runs. Every fetch after that is dropped by the server without an answer
/// (`$JS.API.>` has interest, so no 503), the ingress counts a fetch error
/// every ~3 s and retries for ever: `is_finished()` stays false and `stop`
/// reports success. It must end on its own with an error naming the
/// durable (as async-nats's own `consumer.messages()` ends with
/// `ConsumerDeleted`).
#[test]
fn a_deleted_durable_stops_the_ingress_with_an_error() {
    let server = common::single("");
    let link = link(&server.url());
    ensure_stream(&link);
    publish_alternating(&link, 0, 20);
    let seen: Seen = Arc::default();
    let ingress = link
        .ingress(
            Postcard,
            IngressOptions::new("EV", "doomed")
                .filter_subject("ev.rc.a")
                .recovery_timeout(Duration::from_millis(500)),
            recording_bus(16, &seen),
        )
        .expect("ingress");
    wait_until(&ingress, Duration::from_secs(10), || {
        seen.lock().unwrap().len() >= 10
    });
    assert_eq!(seen.lock().unwrap().len(), 10);
    let js = link.jetstream();
    link.handle().block_on(async {
        let stream = js.get_stream("EV").await.unwrap();
        stream.delete_consumer("doomed").await.unwrap();
    });
    // Generous: a fix needs one failed fetch (~2.1 s) and one info request.
    wait_until(&ingress, Duration::from_secs(15), || false);
    let report = ingress.report();
    let finished = ingress.is_finished();
    let asked = Instant::now();
    let stopped = ingress.stop();
    let took = asked.elapsed();
    eprintln!("finished on its own: {finished}; report {report:?}; stop took {took:?}");
    // Not a hang today: stop is honoured within a fetch tick.
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert!(
        finished,
        "the ingress still runs 15 s after its durable was deleted, retrying fetches \
         that nothing answers ({} fetch errors, nothing in its error): {report:?}",
        report.fetch_errors
    );
    let (bus, error) = stopped.expect_err("stop must hand back why the ingress ended");
    if let Some(bus) = bus {
        let _ = bus.shutdown();
    }
    let text = error.to_string();
    assert!(
        matches!(error, IngressError::ConsumerGone { .. }),
        "{error:?}"
    );
    assert!(
        text.contains("doomed"),
        "the error names the durable: {text}"
    );
}

/// A durable with `DeliverPolicy::LastPerSubject` delivers only the last
/// message of each subject present when it was made. The ingress took it;
/// when a delivery was lost, it read the gap from the stream by subject
/// and published superseded messages the durable never delivers (the bus
/// got 14 events where the durable delivers 10). Refused now.
#[test]
fn a_last_per_subject_durable_is_refused() {
    let server = common::single("");
    let link = link(&server.url());
    ensure_stream(&link);
    let js = link.jetstream();
    // n 0..8 on subjects of their own (stream sequences 1..=8), n 8 on
    // `ev.lps.a` (9), n 9..14 on `ev.lps.b` (10..=14).
    let subjects: Vec<String> = (0..8)
        .map(|i| format!("ev.lps.x{i}"))
        .chain(["ev.lps.a".to_owned()])
        .chain((0..5).map(|_| "ev.lps.b".to_owned()))
        .collect();
    link.handle().block_on(async {
        for (n, subject) in subjects.into_iter().enumerate() {
            let payload = postcard::to_allocvec(&Ev {
                producer: 0,
                n: n as u64,
            })
            .unwrap();
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let stream = js.get_stream("EV").await.unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some("lps".into()),
                filter_subject: "ev.lps.>".into(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_wait: Duration::from_secs(3),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let seen: Seen = Arc::default();
    match link.ingress(
        Postcard,
        IngressOptions::new("EV", "lps").filter_subject("ev.lps.>"),
        recording_bus(8, &seen),
    ) {
        Err(LinkError::ConsumerMismatch { existing, .. }) => {
            assert!(existing.contains("LastPerSubject"), "{existing}");
        }
        Err(e) => panic!("{e}"),
        Ok(ingress) => {
            let _ = ingress.stop();
            panic!("a LastPerSubject durable was taken");
        }
    }
}
