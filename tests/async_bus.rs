//! Async publishing, polling, streams and shutdown (feature `async`), under
//! a current-thread and a multi-threaded tokio runtime: nothing lost or
//! doubled, per-producer order, cancellation at each await point, halted
//! and closed buses, and no blocking call on an executor thread (on a
//! current-thread runtime producer and consumer tasks share one thread, so
//! one blocking wait would hang the test).
#![cfg(feature = "async")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{bounded, Event};
use ringbus::{Blocking, PollError, PublishError, Sequence};
use tokio_stream::StreamExt;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

const N: u64 = if cfg!(miri) { 200 } else { 20_000 };

/// Three producer tasks and one poller task on a ring of 4 that laps: every
/// event once, each producer's in order.
fn producers_and_a_poller(runtime: tokio::runtime::Runtime) {
    runtime.block_on(async {
        let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
        let mut poller = producer.subscribe().unwrap();
        let consumer = tokio::spawn(async move {
            let mut next = [0u64; 3];
            let mut count = 0u64;
            loop {
                let polled = poller
                    .poll_async(16, |e: &Event, _: Sequence, _: bool| {
                        e.verify();
                        let p = (e.value >> common::PRODUCER_SHIFT) as usize;
                        assert_eq!(e.value & ((1 << common::PRODUCER_SHIFT) - 1), next[p]);
                        next[p] += 1;
                        count += 1;
                    })
                    .await;
                match polled {
                    Ok(_) => {}
                    Err(PollError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            (count, next)
        });
        let tasks: Vec<_> = (0..3u64)
            .map(|p| {
                let producer = producer.clone();
                tokio::spawn(async move {
                    for i in 0..N {
                        producer
                            .publish_async(|e| e.set(common::value(p, i)))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        producer.shutdown_async().await.unwrap();
        let (count, next) = consumer.await.unwrap();
        assert_eq!(count, 3 * N);
        assert_eq!(next, [N; 3]);
    });
}

#[test]
fn producer_and_poller_tasks_on_a_current_thread_runtime() {
    bounded(60, || producers_and_a_poller(current_thread()));
}

#[test]
fn producer_and_poller_tasks_on_a_multi_threaded_runtime() {
    bounded(60, || producers_and_a_poller(multi_thread()));
}

#[test]
fn a_stage_thread_and_batch_publishing_tasks_with_an_awaited_shutdown() {
    bounded(60, || {
        current_thread().block_on(async {
            let sum = Arc::new(AtomicU64::new(0));
            let s = Arc::clone(&sum);
            let mut producer = ringbus::single_producer(8, Event::default, Blocking)
                .handle_events_with(move |e: &Event, _: Sequence, _: bool| {
                    s.fetch_add(e.value, Ordering::Relaxed);
                })
                .build();
            let mut expected = 0;
            for b in 0..N / 4 {
                producer
                    .batch_publish_async(4, |slots| {
                        for (i, e) in slots.enumerate() {
                            e.set(b * 4 + i as u64);
                        }
                    })
                    .await
                    .unwrap();
                expected += (0..4).map(|i| b * 4 + i).sum::<u64>();
            }
            let report = producer.shutdown_async().await.unwrap();
            assert_eq!(report.stages[0].processed, N / 4 * 4);
            assert_eq!(sum.load(Ordering::Relaxed), expected);
        });
    });
}

#[test]
fn a_publish_cancelled_while_waiting_for_room_claims_nothing() {
    bounded(30, || {
        current_thread().block_on(async {
            let mut producer = ringbus::single_producer(4, Event::default, Blocking).build();
            let mut poller = producer.subscribe().unwrap();
            for i in 0..4 {
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            // Full: the fifth waits for room, and is dropped while waiting.
            let mut called = false;
            let waited = tokio::time::timeout(
                Duration::from_millis(20),
                producer.publish_async(|e| {
                    called = true;
                    e.set(99);
                }),
            )
            .await;
            assert!(waited.is_err(), "the ring was full");
            assert!(!called, "a cancelled publish wrote nothing");
            assert_eq!(producer.cursor(), 3, "and claimed nothing");
            // A poll cancelled before events arrive handles nothing either.
            let mut seen = Vec::new();
            poller
                .poll_async(2, |e: &Event, _: Sequence, _: bool| seen.push(e.value))
                .await
                .unwrap();
            assert_eq!(seen, [0, 1]);
            producer.publish_async(|e| e.set(4)).await.unwrap();
            let mut rest = Vec::new();
            while rest.len() < 3 {
                poller
                    .poll_async(8, |e: &Event, _: Sequence, _: bool| rest.push(e.value))
                    .await
                    .unwrap();
            }
            assert_eq!(rest, [2, 3, 4], "nothing lost, nothing doubled");
            let idle = tokio::time::timeout(
                Duration::from_millis(20),
                poller.poll_async(8, |_: &Event, _: Sequence, _: bool| {
                    panic!("nothing published")
                }),
            )
            .await;
            assert!(idle.is_err());
            producer.publish_async(|e| e.set(5)).await.unwrap();
            let mut last = Vec::new();
            poller
                .poll_async(8, |e: &Event, _: Sequence, _: bool| last.push(e.value))
                .await
                .unwrap();
            assert_eq!(last, [5]);
        });
    });
}

#[test]
fn a_stream_of_owned_events_ends_when_the_producers_are_gone() {
    bounded(30, || {
        multi_thread().block_on(async {
            let producer = ringbus::multi_producer(16, Event::default, Blocking).build();
            let stream = producer
                .subscribe()
                .unwrap()
                .into_stream(8, |e: &Event| e.value);
            let reader = tokio::spawn(async move {
                let values: Vec<u64> = stream.map(|r| r.unwrap()).collect().await;
                values
            });
            for i in 0..N {
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            producer.shutdown_async().await.unwrap();
            let values = reader.await.unwrap();
            assert_eq!(values, (0..N).collect::<Vec<_>>());
        });
    });
}

#[test]
fn a_stream_in_select_with_a_timer() {
    bounded(30, || {
        current_thread().block_on(async {
            let mut producer = ringbus::single_producer(8, Event::default, Blocking).build();
            let mut stream = producer
                .subscribe()
                .unwrap()
                .into_stream(4, |e: &Event| e.value);
            let mut got = Vec::new();
            let mut ticks = 0;
            let mut next = 0;
            while got.len() < 10 {
                tokio::select! {
                    item = stream.next() => got.push(item.unwrap().unwrap()),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {
                        ticks += 1;
                        producer.publish_async(|e| e.set(next)).await.unwrap();
                        next += 1;
                    }
                }
            }
            assert_eq!(got, (0..10).collect::<Vec<_>>());
            assert!(ticks >= 10);
        });
    });
}

#[test]
fn a_halted_bus_answers_awaiting_producers_and_pollers() {
    bounded(30, || {
        multi_thread().block_on(async {
            let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
            let mut poller = producer.subscribe().unwrap();
            let stream = producer
                .subscribe()
                .unwrap()
                .into_stream(4, |e: &Event| e.value);
            for i in 0..4 {
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            // A publisher waiting for room and a poller of a drained bus
            // are both woken by the halt.
            let waiting = {
                let producer = producer.clone();
                tokio::spawn(async move { producer.publish_async(|e| e.set(9)).await })
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            producer.halt();
            assert_eq!(waiting.await.unwrap(), Err(PublishError::Halted));
            // What was published before the halt may still be read (as
            // with `poll`); then the poller hears of the halt.
            let mut read = 0;
            let end = loop {
                match poller
                    .poll_async(8, |_: &Event, _: Sequence, _: bool| {})
                    .await
                {
                    Ok(n) => read += n,
                    Err(e) => break e,
                }
            };
            assert_eq!(end, PollError::Halted);
            assert!(read <= 4);
            let items: Vec<_> = stream.collect().await;
            assert!(
                matches!(items.last(), Some(Err(PollError::Halted))),
                "{items:?}"
            );
            assert_eq!(
                producer.publish_async(|_| {}).await,
                Err(PublishError::Halted)
            );
        });
    });
}

/// A bus whose stage hands `f` a clone of its producer at its first event.
fn handing_its_stage_a_clone(
    mut f: impl FnMut(ringbus::MultiProducer<Event, Blocking>) + Send + 'static,
) -> ringbus::MultiProducer<Event, Blocking> {
    let clone = Arc::new(std::sync::Mutex::new(
        None::<ringbus::MultiProducer<Event, Blocking>>,
    ));
    let c = Arc::clone(&clone);
    let producer = ringbus::multi_producer(8, Event::default, Blocking)
        .handle_events_with(move |_: &Event, seq: Sequence, _: bool| {
            if seq == 0 {
                if let Some(p) = c.lock().unwrap().take() {
                    f(p);
                }
            }
        })
        .build();
    *clone.lock().unwrap() = Some(producer.clone());
    producer
}

/// The same future made in a handler and awaited on another thread: it
/// closed the bus when it was made (a clone's publish gets `Closed` before
/// the future is polled) and answers `OnStageThread`. It ran `shutdown`
/// when first polled, on the polling thread: a full drain and join there
/// (on an executor thread), and the bus open until then.
#[test]
fn shutdown_async_made_on_a_stage_thread_answers_where_it_is_polled() {
    type Shutdown = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<ringbus::ShutdownReport, ringbus::ShutdownError>,
                > + Send,
        >,
    >;
    bounded(30, || {
        let (tx, rx) = std::sync::mpsc::channel::<Shutdown>();
        let tx = std::sync::Mutex::new(tx);
        let producer = handing_its_stage_a_clone(move |p| {
            tx.lock()
                .unwrap()
                .send(Box::pin(p.shutdown_async()))
                .unwrap();
        });
        producer.publish(|e| e.set(1)).unwrap();
        let shutdown = rx.recv().unwrap();
        assert_eq!(
            producer.publish(|e| e.set(2)),
            Err(PublishError::Closed),
            "closed when the future was made"
        );
        let answer = current_thread().block_on(shutdown);
        assert!(
            matches!(answer, Err(ringbus::ShutdownError::OnStageThread)),
            "{answer:?}"
        );
        drop(producer);
    });
}

#[test]
fn shutdown_async_on_a_stage_thread_answers_at_once() {
    bounded(30, || {
        let answer = Arc::new(std::sync::Mutex::new(None));
        let a = Arc::clone(&answer);
        let producer = handing_its_stage_a_clone(move |p| {
            // Awaited on its own stage thread: it cannot wait for itself,
            // so it must answer instead of hang.
            let result = current_thread().block_on(p.shutdown_async());
            *a.lock().unwrap() = Some(result.map(|_| ()).map_err(|e| e.to_string()));
        });
        producer.publish(|e| e.set(1)).unwrap();
        drop(producer);
        let answer = loop {
            if let Some(answer) = answer.lock().unwrap().take() {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let error = answer.expect_err("OnStageThread");
        assert!(error.contains("stage"), "{error}");
    });
}

#[test]
fn a_publish_waiting_for_room_hears_of_another_handles_shutdown() {
    bounded(30, || {
        multi_thread().block_on(async {
            let producer = ringbus::multi_producer(2, Event::default, Blocking).build();
            let mut poller = producer.subscribe().unwrap();
            for i in 0..2 {
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            let waiting = {
                let producer = producer.clone();
                tokio::spawn(async move { producer.publish_async(|e| e.set(9)).await })
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            // Another handle shuts down while the poller drains.
            let draining = tokio::spawn(async move {
                let mut n = 0;
                while let Ok(k) = poller
                    .poll_async(8, |_: &Event, _: Sequence, _: bool| {})
                    .await
                {
                    n += k;
                }
                n
            });
            let _ = producer.shutdown_async().await;
            let published = waiting.await.unwrap();
            let drained = draining.await.unwrap();
            match published {
                Err(PublishError::Closed) => assert_eq!(drained, 2),
                Ok(_) => assert_eq!(drained, 3, "an acknowledged event is drained"),
                other => panic!("{other:?}"),
            }
        });
    });
}

#[test]
fn a_stream_whose_map_panics_yields_no_event_twice() {
    bounded(30, || {
        current_thread().block_on(async {
            let mut producer = ringbus::single_producer(8, Event::default, Blocking).build();
            let mut panicked = false;
            let mut stream = producer
                .subscribe()
                .unwrap()
                .into_stream(8, move |e: &Event| {
                    if e.value == 2 && !panicked {
                        panicked = true;
                        panic!("map failed once");
                    }
                    e.value
                });
            for i in 0..4 {
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures_lite_poll(&mut stream)
            }));
            assert!(first.is_err(), "the map panicked");
            let mut got = Vec::new();
            while got.len() < 4 {
                got.push(stream.next().await.unwrap().unwrap());
            }
            assert_eq!(got, [0, 1, 2, 3], "each event once, in order");
        });
    });
}

/// Polls a stream once, outside any runtime's task.
fn futures_lite_poll<S: tokio_stream::Stream + Unpin>(
    s: &mut S,
) -> std::task::Poll<Option<S::Item>> {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = std::task::Waker::from(Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    std::pin::Pin::new(s).poll_next(&mut cx)
}

#[test]
fn an_evicted_subscriber_hears_of_it_through_poll_async_and_its_stream() {
    bounded(30, || {
        current_thread().block_on(async {
            let mut producer = ringbus::single_producer(4, Event::default, Blocking).build();
            let mut poller = producer
                .subscribe_lag_limited(ringbus::LagLimit::never_hold())
                .unwrap();
            let stream = producer
                .subscribe_lag_limited(ringbus::LagLimit::never_hold())
                .unwrap()
                .into_stream(4, |e: &Event| e.value);
            for i in 0..20 {
                // Never waits: both laggards are evicted.
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            assert!(matches!(
                poller
                    .poll_async(4, |_: &Event, _: Sequence, _: bool| {})
                    .await,
                Err(PollError::Lagged { .. })
            ));
            let items: Vec<_> = stream.collect().await;
            assert!(
                matches!(items[..], [Err(PollError::Lagged { .. })]),
                "{items:?}"
            );
        });
    });
}

/// Issue #24: an async producer held by a lag-limited subscriber with a
/// hold above zero waited for ever (it has no thread to time a wake, and
/// nothing signalled it); now a clock wakes it within a quarter of the
/// limit, also for a subscriber that joined while it waited.
#[test]
fn an_async_producer_evicts_a_lag_limited_subscriber_that_holds_it() {
    bounded(30, || {
        let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
        let early = producer
            .subscribe_lag_limited(ringbus::LagLimit::hold_at_most(Duration::from_millis(30)))
            .unwrap();
        let p = producer.clone();
        let published = std::thread::spawn(move || {
            current_thread().block_on(async move {
                for i in 0..12 {
                    p.publish_async(|e| e.set(i)).await.unwrap();
                }
            })
        });
        // A second one joins while the producer is (probably) waiting.
        std::thread::sleep(Duration::from_millis(5));
        let late = producer
            .subscribe_lag_limited(ringbus::LagLimit::hold_at_most(Duration::from_millis(30)))
            .unwrap();
        published.join().unwrap();
        for mut idle in [early, late] {
            let polled = idle.poll(64, |_: &Event, _: Sequence, _: bool| {});
            assert!(
                matches!(polled, Err(PollError::Lagged { .. })),
                "{polled:?}"
            );
        }
        producer.shutdown().unwrap();
    });
}

/// A publish waiting (async) on a full ring when another clone halts the
/// bus and then shuts it down says `Halted`, as a blocking publish does
/// ("later publishes return `Err(Halted)`, including producers already
/// waiting on a full ring"); polled again only after the close, it used
/// to say `Closed`.
#[test]
fn an_async_publish_waiting_on_a_full_ring_says_halted_after_a_halt_and_a_close() {
    use std::future::Future;
    use std::sync::atomic::AtomicBool;
    bounded(30, || {
        let stuck = Arc::new(AtomicBool::new(true));
        let hold = Arc::clone(&stuck);
        let producer = ringbus::multi_producer(4, Event::default, Blocking)
            .handle_events_with(move |_: &Event, _: Sequence, _: bool| {
                while hold.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .build();
        for i in 0..4 {
            // Four fill the ring; the stage holds the first.
            producer.publish(|e| e.set(i)).unwrap();
        }
        let runtime = current_thread();
        let waiting = producer.clone();
        let mut publish = Box::pin(waiting.publish_async(|e| e.set(99)));
        let first = runtime.block_on(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(publish.as_mut().poll(cx))
        }));
        assert!(first.is_pending(), "the ring was full");
        producer.halt();
        let other = producer.clone();
        let _ = other.shutdown_timeout(Duration::from_millis(10));
        assert_eq!(runtime.block_on(publish), Err(PublishError::Halted));
        stuck.store(false, Ordering::Relaxed);
        drop(waiting);
        drop(producer);
    });
}

/// A future that counts its polls.
struct Counted<F> {
    inner: std::pin::Pin<Box<F>>,
    polls: Arc<AtomicU64>,
}

impl<F: std::future::Future> std::future::Future for Counted<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// More tasks awaiting room than a signal's sweep bound (1,024 wakers):
/// once settled, they wait without being polled. A fixed bound had each
/// sweep's waiters, enlisting again, set off the next sweep, for ever: a
/// wake storm (25,803 polls in 500 ms here) while nothing could be
/// published.
#[test]
#[cfg_attr(miri, ignore = "1,100 tasks: the bound is not scaled for Miri")]
fn many_tasks_awaiting_room_are_not_polled_over_and_over() {
    const TASKS: u64 = 1_100;
    bounded(60, || {
        current_thread().block_on(async {
            let producer = ringbus::multi_producer(4, Event::default, Blocking).build();
            let mut poller = producer.subscribe().unwrap();
            for i in 0..4 {
                producer.publish_async(|e| e.set(i)).await.unwrap();
            }
            let polls = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..TASKS)
                .map(|k| {
                    let producer = producer.clone();
                    let polls = Arc::clone(&polls);
                    tokio::spawn(async move {
                        Counted {
                            inner: Box::pin(async move {
                                producer.publish_async(|e| e.set(4 + k)).await
                            }),
                            polls,
                        }
                        .await
                    })
                })
                .collect();
            // Settled: each task polled once, and again for each sweep of
            // a signal it waits on (its poller's and the publish stripes):
            // no poll for 100 ms (or 10 s gone: a storm never settles).
            let mut settled = polls.load(Ordering::Relaxed);
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = polls.load(Ordering::Relaxed);
                if now == settled {
                    break;
                }
                settled = now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let later = polls.load(Ordering::Relaxed) - settled;
            assert!(
                later < TASKS / 10,
                "{later} polls in 500 ms of {TASKS} tasks that wait for room \
                 ({settled} before)"
            );
            // Then everything arrives, once.
            let mut seen = vec![0u8; (4 + TASKS) as usize];
            let mut read = 0;
            while read < seen.len() {
                read += poller
                    .poll_async(64, |e: &Event, _: Sequence, _: bool| {
                        seen[e.value as usize] += 1;
                    })
                    .await
                    .unwrap();
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert!(seen.iter().all(|&n| n == 1));
        });
    });
}

/// A stream's batch above the ring's capacity (`usize::MAX`: "whatever is
/// there") is the capacity: it asked the allocator for that many items
/// (a capacity overflow panic, or an abort).
#[test]
fn a_stream_batch_of_usize_max_takes_what_is_there() {
    bounded(30, || {
        current_thread().block_on(async {
            let mut producer = ringbus::single_producer(8, Event::default, Blocking).build();
            let mut stream = producer
                .subscribe()
                .unwrap()
                .into_stream(usize::MAX, |e: &Event| e.value);
            for i in 0..20 {
                producer.publish_async(|e| e.set(i)).await.unwrap();
                assert_eq!(stream.next().await, Some(Ok(i)));
            }
            drop(producer);
            assert_eq!(stream.next().await, None);
        });
    });
}
