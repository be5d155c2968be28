//! An async service on ringbus: simulated HTTP handlers (tokio tasks)
//! publish sign-ups; async subscribers aggregate them; a slow analytics
//! subscriber with a lag limit is evicted instead of stalling the service,
//! and says so. (Async producers enforce a lag limit when they are polled:
//! `never_hold` is the limit for an async service, where nothing wakes a
//! producer waiting on the one subscriber that holds it.)
//!
//! ```text
//! 4 handler tasks ─publish_async─> ring (Blocking, 1024) ─┬─> stats      (a Stream, per region)
//!                                                         ├─> welcome    (poll_async, counts)
//!                                                         └─> analytics  (slow; LagLimit::never_hold -> evicted)
//! ```
//!
//! `cargo run --release --example async_service --features async`
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringbus::{Blocking, LagLimit, PollError, Sequence};
use tokio_stream::StreamExt;

#[derive(Debug, Default, Clone)]
struct SignUp {
    user: u64,
    region: &'static str,
}

const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];
const HANDLERS: u64 = 4;
const PER_HANDLER: u64 = 25_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let producer = ringbus::multi_producer(1024, SignUp::default, Blocking).build();
    let metrics = producer.metrics();

    // Stats: a Stream of regions, folded per region.
    let stats = producer
        .subscribe()?
        .into_stream(256, |s: &SignUp| s.region);
    let stats = tokio::spawn(async move {
        let mut per_region = BTreeMap::new();
        let mut stream = stats;
        while let Some(region) = stream.next().await {
            *per_region.entry(region?).or_insert(0u64) += 1;
        }
        Ok::<_, PollError>(per_region)
    });

    // Welcome mails: poll_async, a batch at a time.
    let mut welcome = producer.subscribe()?;
    let welcome = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            match welcome
                .poll_async(256, |_: &SignUp, _: Sequence, _: bool| sent += 1)
                .await
            {
                Ok(_) => {}
                Err(PollError::Closed) => return sent,
                Err(e) => panic!("welcome: {e}"),
            }
        }
    });

    // Analytics: slow (5 ms a batch), and never allowed to hold the
    // service: evicted the first time a handler finds the ring full
    // because of it.
    let mut analytics = producer.subscribe_lag_limited(LagLimit::never_hold())?;
    let analytics = tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            let polled = analytics
                .poll_async(64, |_: &SignUp, _: Sequence, _: bool| seen += 1)
                .await;
            match polled {
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(PollError::Lagged { behind }) => return (seen, Some(behind)),
                Err(PollError::Closed) => return (seen, None),
                Err(e) => panic!("analytics: {e}"),
            }
        }
    });

    // The HTTP handlers.
    let started = Instant::now();
    let handlers: Vec<_> = (0..HANDLERS)
        .map(|h| {
            let producer = producer.clone();
            tokio::spawn(async move {
                for i in 0..PER_HANDLER {
                    let user = h * PER_HANDLER + i;
                    producer
                        .publish_async(|s| {
                            s.user = user;
                            s.region = REGIONS[(user % 4) as usize];
                        })
                        .await
                        .expect("the bus accepts sign-ups");
                    if i % 1000 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let snapshot = metrics.snapshot();
    println!(
        "after 10 ms: cursor {}, subscribers' lag {:?}",
        snapshot.cursor,
        snapshot
            .subscribers
            .iter()
            .map(|s| s.lag)
            .collect::<Vec<_>>()
    );
    for h in handlers {
        h.await?;
    }
    let published = HANDLERS * PER_HANDLER;
    println!(
        "{published} sign-ups published by {HANDLERS} handler tasks in {:?}",
        started.elapsed()
    );
    producer.shutdown_async().await?;

    let per_region = stats.await??;
    let sent = welcome.await?;
    let (analysed, evicted) = analytics.await?;
    println!("stats per region: {per_region:?}");
    println!("welcome mails sent: {sent}");
    match evicted {
        Some(behind) => println!(
            "analytics was evicted {behind} events behind after analysing {analysed}; \
             the handlers never waited for it"
        ),
        None => println!("analytics kept up and analysed {analysed}"),
    }
    assert_eq!(per_region.values().sum::<u64>(), published);
    assert_eq!(sent, published);
    assert!(
        evicted.is_some(),
        "a 5 ms-per-batch subscriber cannot keep up with this load"
    );
    Ok(())
}
