//! The bridge against the raw `async-nats` JetStream publisher and pull
//! consumer, on the same server, message size and ack window.
//!
//! ```text
//! cargo bench -p ringbus-nats --bench bridge -- --rounds 5 --events 100000
//! ```
//! Starts its own `nats-server` (JetStream, memory storage, a loopback
//! port) unless `NATS_URL` names one. Rounds alternate bridge and raw; the
//! ratio is the median of the per-round ratios, with its spread.
//! * egress: events published into a bus whose egress stage publishes them
//!   (acked), against a loop keeping the same window of `send_publish`
//!   acks in flight; both send a `Nats-Msg-Id`.
//! * ingress: the same messages read back into a bus by an ingress, against
//!   a pull consumer fetching batches and acking each message
//!   (`AckPolicy::Explicit`, as the ingress does); a consumer acking each
//!   batch at once (`AckPolicy::All`) is printed too.
//! * latency: one event every 500 µs from an egress bus to an ingress bus
//!   (A publish -> B handler), against a raw publisher and pull consumer;
//!   and the server round trip (publish -> ack) the target is measured on.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use ringbus::{Blocking, Sequence};
use ringbus_nats::async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
use ringbus_nats::{EgressExt, EgressOptions, IngressOptions, Link, LinkOptions, Postcard};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Tick {
    id: u64,
    sent_ns: u64,
    price: u64,
    quantity: u32,
    side: u8,
}

const WINDOW: usize = 256;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// The server we started, and its storage (removed when dropped).
struct Server(Option<Child>, #[allow(dead_code)] Option<tempfile::TempDir>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn server() -> (String, Server) {
    if let Ok(url) = std::env::var("NATS_URL") {
        return (url, Server(None, None));
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server, or bash ci/nats-server.sh)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        format!("nats://127.0.0.1:{port}"),
        Server(Some(child), Some(dir)),
    )
}

fn fresh_stream(link: &Link, name: &str) {
    let js = link.jetstream();
    let _ = link.handle().block_on(js.delete_stream(name));
    link.ensure_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .unwrap();
}

fn tick(id: u64) -> Tick {
    Tick {
        id,
        sent_ns: 0,
        price: 10_000 + id % 97,
        quantity: 1 + (id % 13) as u32,
        side: (id % 2) as u8,
    }
}

/// Events per second through an egress stage.
fn bridge_egress(link: &Link, stream: &str, n: u64) -> f64 {
    let subject = format!("{stream}.ticks");
    let egress = link.egress(
        Postcard,
        EgressOptions::new(subject, format!("bridge-{stream}")).window(WINDOW),
    );
    let mut bus = ringbus::single_producer(4096, Tick::default, Blocking)
        .egress_to(egress)
        .build();
    let start = Instant::now();
    for id in 0..n {
        bus.publish(|e| *e = tick(id)).unwrap();
    }
    bus.shutdown().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Events per second through the raw publisher with the same window.
fn raw_egress(link: &Link, stream: &str, n: u64) -> f64 {
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(WINDOW * 4)
        .backpressure_on_inflight(true);
    let js = {
        let _r = link.handle().enter();
        js.build(link.client().clone())
    };
    let subject = format!("{stream}.ticks");
    link.handle().block_on(async {
        let start = Instant::now();
        let mut acks = VecDeque::with_capacity(WINDOW);
        for id in 0..n {
            if acks.len() >= WINDOW {
                let ack: jetstream::context::PublishAckFuture = acks.pop_front().unwrap();
                ack.await.unwrap();
            }
            let payload = postcard::to_allocvec(&tick(id)).unwrap();
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(format!("raw-{stream}:{id}"));
            acks.push_back(js.send_publish(subject.clone(), message).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
}

/// Events per second from the stream into a bus through an ingress.
fn bridge_ingress(link: &Link, stream: &str, n: u64) -> f64 {
    let handled = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handled);
    let bus = ringbus::single_producer(4096, Tick::default, Blocking)
        .handle_events_with(move |_: &Tick, _: Sequence, _: bool| {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let start = Instant::now();
    let ingress = link
        .ingress(
            Postcard,
            IngressOptions::new(stream, "bridge").idle_wait(Duration::from_millis(20)),
            bus,
        )
        .unwrap();
    while handled.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_micros(200));
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let (bus, _) = ingress.stop().map_err(|(_, e)| e).unwrap();
    bus.shutdown().unwrap();
    rate
}

/// Events per second read and decoded by a raw pull consumer.
/// With `cumulative`, one ack per fetched batch under `AckPolicy::All`
/// (the fastest raw form, but one that would also ack messages a dropped
/// connection lost); otherwise an ack per message under `Explicit`, the
/// ingress's own policy.
fn raw_ingress(link: &Link, stream: &str, n: u64, cumulative: bool) -> f64 {
    let js = link.jetstream();
    link.handle().block_on(async {
        let start = Instant::now();
        let consumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_or_create_consumer(
                if cumulative { "raw-all" } else { "raw" },
                pull::Config {
                    durable_name: Some(if cumulative { "raw-all" } else { "raw" }.into()),
                    ack_policy: if cumulative {
                        AckPolicy::All
                    } else {
                        AckPolicy::Explicit
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut seen = 0;
        while seen < n {
            let mut batch = consumer
                .fetch()
                .max_messages(256)
                .expires(Duration::from_millis(20))
                .messages()
                .await
                .unwrap();
            let mut last = None;
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                let t: Tick = postcard::from_bytes(&m.payload).unwrap();
                std::hint::black_box(t);
                seen += 1;
                if cumulative {
                    last = Some(m);
                } else {
                    m.ack().await.unwrap();
                }
            }
            if let Some(m) = last {
                m.ack().await.unwrap();
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// A publish -> B handler, one event every 500 µs, through the bridge.
fn bridge_latency(link: &Link, stream: &str, n: u64, base: Instant) -> Histogram<u64> {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let (hh, count) = (Arc::clone(&hist), Arc::new(AtomicU64::new(0)));
    let c = Arc::clone(&count);
    let bus_b = ringbus::single_producer(1024, Tick::default, Blocking)
        .handle_events_with(move |t: &Tick, _: Sequence, _: bool| {
            hh.lock().unwrap().record(now_ns(base) - t.sent_ns).unwrap();
            c.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let ingress = link
        .ingress(Postcard, IngressOptions::new(stream, "latency"), bus_b)
        .unwrap();
    let subject = format!("{stream}.lat");
    let mut bus_a = ringbus::single_producer(1024, Tick::default, Blocking)
        .egress_to(link.egress(
            Postcard,
            EgressOptions::new(subject, format!("lat-{stream}")),
        ))
        .build();
    for id in 0..n {
        let due = Instant::now() + Duration::from_micros(500);
        bus_a
            .publish(|e| {
                *e = Tick {
                    sent_ns: now_ns(base),
                    ..tick(id)
                }
            })
            .unwrap();
        // Sleep, as the raw side does: on 2 cores a spinning publisher
        // would take a core from the bridge's threads.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    bus_a.shutdown().unwrap();
    while count.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (bus_b, _) = ingress.stop().map_err(|(_, e)| e).unwrap();
    bus_b.shutdown().unwrap();
    let h = hist.lock().unwrap().clone();
    h
}

/// The same with the raw publisher and pull consumer; and the server round
/// trip (publish -> ack).
fn raw_latency(
    link: &Link,
    stream: &str,
    n: u64,
    base: Instant,
) -> (Histogram<u64>, Histogram<u64>) {
    let js = link.jetstream();
    let subject = format!("{stream}.lat");
    link.handle().block_on(async {
        let consumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_or_create_consumer(
                "raw-lat",
                pull::Config {
                    durable_name: Some("raw-lat".into()),
                    ack_policy: AckPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let reader = tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            let mut messages = consumer.messages().await.unwrap();
            while (hist.len()) < n {
                let m = messages.next().await.unwrap().unwrap();
                let t: Tick = postcard::from_bytes(&m.payload).unwrap();
                hist.record(now_ns(base) - t.sent_ns).unwrap();
                m.ack().await.unwrap();
            }
            hist
        });
        let mut rtt = Histogram::<u64>::new(3).unwrap();
        for id in 0..n {
            let due = Instant::now() + Duration::from_micros(500);
            let sent = now_ns(base);
            let payload = postcard::to_allocvec(&Tick {
                sent_ns: sent,
                ..tick(id)
            })
            .unwrap();
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(format!("rawlat-{stream}:{id}"));
            js.send_publish(subject.clone(), message)
                .await
                .unwrap()
                .await
                .unwrap();
            rtt.record(now_ns(base) - sent).unwrap();
            tokio::time::sleep_until(due.into()).await;
        }
        (reader.await.unwrap(), rtt)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::MAX, f64::min),
        v.iter().copied().fold(f64::MIN, f64::max),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = arg("--rounds", 5);
    let n = arg("--events", 100_000);
    let latency_events = arg("--latency-events", 2_000);
    let (url, _server) = server();
    let link = Link::connect(&url, LinkOptions::default()).expect("connect");
    let size = postcard::to_allocvec(&tick(123_456)).unwrap().len();
    println!("bridge vs raw async-nats: {rounds} rounds of {n} events, {size}-byte payloads, window {WINDOW}, {url}");
    let (mut eg, mut ing) = (Vec::new(), Vec::new());
    let (mut eg_rates, mut ing_rates) = (Vec::new(), Vec::new());
    let mut cumulative = Vec::new();
    for round in 0..rounds {
        let (sb, sr) = (format!("B{round}"), format!("R{round}"));
        fresh_stream(&link, &sb);
        fresh_stream(&link, &sr);
        // Alternate which goes first.
        let (b, r) = if round % 2 == 0 {
            let b = bridge_egress(&link, &sb, n);
            (b, raw_egress(&link, &sr, n))
        } else {
            let r = raw_egress(&link, &sr, n);
            (bridge_egress(&link, &sb, n), r)
        };
        let (bi, ri) = if round % 2 == 0 {
            let bi = bridge_ingress(&link, &sb, n);
            (bi, raw_ingress(&link, &sr, n, false))
        } else {
            let ri = raw_ingress(&link, &sr, n, false);
            (bridge_ingress(&link, &sb, n), ri)
        };
        let all = raw_ingress(&link, &sr, n, true);
        cumulative.push(all);
        println!(
            "round {round}: egress {b:.0}/s vs raw {r:.0}/s ({:.2}x); ingress {bi:.0}/s vs raw {ri:.0}/s \
             ({:.2}x; raw with one cumulative ack per batch {all:.0}/s)",
            b / r,
            bi / ri
        );
        eg.push(b / r);
        ing.push(bi / ri);
        eg_rates.push((b, r));
        ing_rates.push((bi, ri));
        let js = link.jetstream();
        let _ = link.handle().block_on(js.delete_stream(sb));
        let _ = link.handle().block_on(js.delete_stream(sr));
    }
    let rate = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (emin, emax) = spread(&eg);
    let (imin, imax) = spread(&ing);
    println!(
        "egress: bridge {:.0} events/s ({:.1} MB/s), raw {:.0}/s: ratio median {:.2}x ({emin:.2}-{emax:.2})",
        rate(&eg_rates, |r| r.0),
        rate(&eg_rates, |r| r.0) * size as f64 / 1e6,
        rate(&eg_rates, |r| r.1),
        median(eg.clone()),
    );
    println!(
        "ingress: raw with one cumulative ack per batch (AckPolicy::All) {:.0}/s",
        median(cumulative)
    );
    println!(
        "ingress: bridge {:.0} events/s ({:.1} MB/s), raw acking each {:.0}/s: ratio median {:.2}x ({imin:.2}-{imax:.2})",
        rate(&ing_rates, |r| r.0),
        rate(&ing_rates, |r| r.0) * size as f64 / 1e6,
        rate(&ing_rates, |r| r.1),
        median(ing.clone()),
    );
    let base = Instant::now();
    fresh_stream(&link, "LB");
    fresh_stream(&link, "LR");
    let bridge = bridge_latency(&link, "LB", latency_events, base);
    let (raw, rtt) = raw_latency(&link, "LR", latency_events, base);
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "latency A publish -> B handler, p50/p99/p99.9: bridge {:.1}/{:.1}/{:.1} us, raw {:.1}/{:.1}/{:.1} us; \
         server round trip p50 {:.1} us; added at p50 {:.1} us = {:.0}% of the round trip",
        us(&bridge, 0.5), us(&bridge, 0.99), us(&bridge, 0.999),
        us(&raw, 0.5), us(&raw, 0.99), us(&raw, 0.999),
        us(&rtt, 0.5),
        us(&bridge, 0.5) - us(&raw, 0.5),
        100.0 * (us(&bridge, 0.5) - us(&raw, 0.5)) / us(&rtt, 0.5)
    );
}
