//! The ingress: a durable JetStream pull consumer feeding a bus, acking a
//! message only once every gating stage of the bus has handled it.
//!
//! One task on the link's runtime fetches at most as many messages as
//! the ring has room for (a full ring stops fetching: no buffer grows),
//! decodes each into its slot and publishes it, remembering the message.
//! Between fetches it reads the bus's
//! [`minimum_gating_sequence`](ringbus::Producer::minimum_gating_sequence)
//! and acknowledges each message the leaf stages have passed
//! (`AckPolicy::Explicit`: a cumulative ack would also cover messages the
//! server sent but a dropped connection lost). A message redelivered while
//! its first delivery is still in the bus, or after it was handled and
//! acked, is recognised by its stream sequence and not published again; a
//! delivery the ingress never saw before is published, even if it comes
//! after later ones. Deliveries lost on the way (the consumer's delivery
//! sequence jumps) are read from the stream directly, so the bus still gets
//! every message in stream order; one ingress per durable consumer.
//!
//! A payload that does not decode goes to the dead-letter subject, with the
//! reason in the `Ringbus-Dead-Reason` header, and counts as handled once
//! the dead letter is sent.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures_util::{FutureExt, StreamExt};
use ringbus::{Producer, PublishError, Sequence, TryPublishError};

use crate::acked::Acked;

/// The longest the ingress waits on the network for a dead letter, a flush
/// or a negative ack: with the server gone, the client would wait for its
/// reconnection.
const NETWORK_WAIT: Duration = Duration::from_secs(2);
use crate::codec::Codec;
use crate::link::{Link, LinkError};

/// Options of an ingress ([`Link::ingress`]).
#[derive(Debug, Clone)]
pub struct IngressOptions {
    stream: String,
    durable: String,
    filter_subject: Option<String>,
    dead_letter_subject: String,
    batch: usize,
    idle_wait: Duration,
    ack_wait: Duration,
    drain_timeout: Duration,
}

impl IngressOptions {
    /// Reads `stream` through the durable pull consumer `durable` (created
    /// with `AckPolicy::Explicit` if missing). Failed decodes go to
    /// `<stream>.dead-letter` unless
    /// [`dead_letter_subject`](IngressOptions::dead_letter_subject) says
    /// otherwise; keep that subject out of the stream's own subjects.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        let stream = stream.into();
        Self {
            dead_letter_subject: format!("{stream}.dead-letter"),
            stream,
            durable: durable.into(),
            filter_subject: None,
            batch: 256,
            idle_wait: Duration::from_millis(100),
            ack_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Only the stream's messages on `subject` (wildcards allowed).
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = Some(subject.into());
        self
    }

    /// Where payloads that fail to decode go.
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = subject.into();
        self
    }

    /// Messages per fetch at most (256 by default; never more than the
    /// ring has room for).
    ///
    /// # Panics
    /// If `batch` is 0.
    pub fn batch(mut self, batch: usize) -> Self {
        assert!(
            batch > 0,
            "an ingress batch of 0 fetches nothing; give it at least 1"
        );
        self.batch = batch;
        self
    }

    /// How long a fetch waits for messages on an idle stream (100 ms by
    /// default); also how late an ack may come when nothing arrives.
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// The consumer's ack wait when the ingress creates it (30 s by
    /// default): a message not acked by then is delivered again.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How long [`Ingress::stop`] waits for the bus to handle what was
    /// published before it acks and returns (5 s by default).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// What an ingress did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngressReport {
    /// Messages published into the bus.
    pub published: u64,
    /// Deliveries recognised as redeliveries and not published again.
    pub redelivered: u64,
    /// Payloads that failed to decode and went to the dead-letter subject.
    pub dead_lettered: u64,
    /// Messages acknowledged (after the bus handled them), each on its own.
    pub acked: u64,
    /// Fetches that failed (the server gone, a timeout); the ingress waited
    /// and fetched again.
    pub fetch_errors: u64,
    /// Messages published that were not acked when it stopped (the bus had
    /// not handled them in the drain timeout): they will be delivered again.
    pub unacked: u64,
    /// Messages whose delivery was lost on the way (a dropped connection,
    /// a dead node) and which were read from the stream directly, so the bus
    /// still got them in stream order.
    pub recovered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    redelivered: AtomicU64,
    dead_lettered: AtomicU64,
    acked: AtomicU64,
    fetch_errors: AtomicU64,
    recovered: AtomicU64,
}

impl Counters {
    fn report(&self, unacked: u64) -> IngressReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngressReport {
            published: get(&self.published),
            redelivered: get(&self.redelivered),
            dead_lettered: get(&self.dead_lettered),
            acked: get(&self.acked),
            fetch_errors: get(&self.fetch_errors),
            recovered: get(&self.recovered),
            unacked,
        }
    }
}

/// Why an ingress stopped on its own.
#[derive(Debug)]
#[non_exhaustive]
pub enum IngressError {
    /// The bus refused the publish (halted or closed); the message was not
    /// acked and will be delivered again.
    Bus(ringbus::PublishError),
    /// The ingress task panicked.
    Panicked(String),
}

impl fmt::Display for IngressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "the bus refused the ingress's publish: {e}"),
            Self::Panicked(m) => write!(f, "the ingress task panicked: {m}"),
        }
    }
}

impl std::error::Error for IngressError {}

/// A running ingress; [`stop`](Ingress::stop) it to get the producer back.
pub struct Ingress<P: Send + 'static> {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    link: Link,
    task: Option<tokio::task::JoinHandle<Ended<P>>>,
}

/// What the ingress task hands back. Dropped without being taken (an
/// `Ingress` dropped inside an async context), it drops the producer on a
/// thread of its own: dropping the last producer drains the bus and joins
/// its stages, which must not happen on the runtime's thread (an egress
/// stage of the same link would wait on that very thread).
struct Ended<P: Send + 'static>(Option<(P, u64, Option<IngressError>)>);

impl<P: Send + 'static> Drop for Ended<P> {
    fn drop(&mut self) {
        if let Some(ended) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("ringbus-nats-drop".into())
                .spawn(move || drop(ended));
        }
    }
}

impl<P: Send + 'static> fmt::Debug for Ingress<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingress")
            .field("report", &self.counters.report(0))
            .finish_non_exhaustive()
    }
}

/// Events decoded and waiting for one publish into the ring, with their
/// stream sequence and delivery (none for one read from the stream).
type ToPublish<E> = Vec<(Option<E>, u64, Option<Message>)>;

/// True when NATS subject `subject` matches `filter` (`*` one token, `>`
/// the rest).
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for want in filter.split('.') {
        match (want, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(got)) if want == got => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// A message published into the bus and not acked yet.
struct Pending {
    ring: Sequence,
    stream: u64,
    message: Option<Message>,
}

struct Run<E, C, P> {
    link: Link,
    options: IngressOptions,
    codec: C,
    producer: P,
    counters: Arc<Counters>,
    pending: VecDeque<Pending>,
    /// Stream sequences acked lately, to recognise a redelivery whose ack
    /// was lost.
    acked: Acked,
    /// The highest stream sequence delivered to us: only a delivery at or
    /// below it can be a redelivery.
    highest: u64,
    /// The consumer (delivery) sequence of the last delivery: a jump says
    /// deliveries were lost on the way (a dropped connection, a dead node).
    last_delivery: Option<u64>,
    /// The stream, to read lost deliveries from directly.
    stream: async_nats::jetstream::stream::Stream,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<P: Send + 'static> Ingress<P> {
    pub(crate) fn start<E, C>(
        link: Link,
        codec: C,
        options: IngressOptions,
        producer: P,
    ) -> Result<Self, LinkError>
    where
        E: Send + 'static,
        C: Codec<E>,
        P: Producer<E> + Send + 'static,
    {
        let (stream, consumer) = link.block_on(consumer_for(&link, &options))?;
        let run_link = link.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        // Acked sequences are kept while the server may still redeliver them.
        let keep = options.ack_wait * 2 + Duration::from_secs(5);
        let mut run = Run {
            link,
            options,
            codec,
            producer,
            counters: Arc::clone(&counters),
            pending: VecDeque::new(),
            acked: Acked::new(keep),
            highest: 0,
            last_delivery: None,
            stream,
            _event: std::marker::PhantomData,
        };
        let stopping = Arc::clone(&stop);
        // A task beside the client's own: a delivery reaches the ring
        // without a hand-off to another thread.
        let task = run_link.handle().spawn(async move {
            let error = run.run(consumer, &stopping).await.err();
            let unacked = run.drain().await;
            Ended(Some((run.producer, unacked, error)))
        });
        Ok(Self {
            stop,
            counters,
            link: run_link,
            task: Some(task),
        })
    }

    /// What it did so far.
    pub fn report(&self) -> IngressReport {
        self.counters.report(0)
    }

    /// True once the ingress stopped on its own (the bus refused it).
    pub fn is_finished(&self) -> bool {
        self.task
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
    }

    /// Stops fetching, waits (up to the drain timeout) for the bus to
    /// handle what was published, acks it, and hands the producer back
    /// with the report (shut the bus down with it). Blocks: call it outside
    /// an async context, or from `spawn_blocking`. What the bus had not
    /// handled is delivered again to the next ingress on this consumer.
    ///
    /// # Errors
    /// Why the ingress had stopped on its own, with the producer.
    pub fn stop(mut self) -> Result<(P, IngressReport), (Option<P>, IngressError)> {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task.take().expect("stopped once");
        match self.link.block_on(task).map(|mut ended| ended.0.take()) {
            Ok(Some((producer, unacked, None))) => Ok((producer, self.counters.report(unacked))),
            Ok(Some((producer, _, Some(error)))) => Err((Some(producer), error)),
            Ok(None) => unreachable!("the task hands its producer back once"),
            Err(e) => Err((None, IngressError::Panicked(e.to_string()))),
        }
    }
}

impl<P: Send + 'static> Drop for Ingress<P> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            // Inside an async context the task is left to end on its own
            // (it sees the flag within one fetch); outside one, wait for it.
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = self.link.block_on(task);
            }
        }
    }
}

async fn consumer_for(
    link: &Link,
    options: &IngressOptions,
) -> Result<(async_nats::jetstream::stream::Stream, PullConsumer), LinkError> {
    let failed = |what: &str, e: &dyn fmt::Display| LinkError::JetStream(format!("{what}: {e}"));
    let stream = link
        .jetstream()
        .get_stream(&options.stream)
        .await
        .map_err(|e| failed(&format!("stream `{}`", options.stream), &e))?;
    let config = pull::Config {
        durable_name: Some(options.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        filter_subject: options.filter_subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&options.durable, config)
        .await
        .map_err(|e| failed(&format!("consumer `{}`", options.durable), &e))?;
    Ok((stream, consumer))
}

impl<E, C: Codec<E>, P: Producer<E>> Run<E, C, P> {
    async fn run(&mut self, consumer: PullConsumer, stop: &AtomicBool) -> Result<(), IngressError> {
        let mut backoff = Duration::from_millis(10);
        while !stop.load(Ordering::Relaxed) {
            self.ack_handled().await;
            let room = self.producer.remaining_capacity().min(self.options.batch);
            if room == 0 {
                // A full ring: fetch nothing until the stages make room.
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            let fetched = consumer
                .fetch()
                .max_messages(room)
                .expires(self.options.idle_wait)
                .messages()
                .await;
            let mut messages = match fetched {
                Ok(messages) => messages,
                Err(_) => {
                    self.fetch_failed(&mut backoff).await;
                    continue;
                }
            };
            let mut burst = Vec::with_capacity(room);
            while let Some(first) = messages.next().await {
                // This delivery and whatever else has arrived with it: one
                // publish into the ring (one wake-up of its stages) for all.
                let mut failed = first.is_err();
                burst.extend(first.ok());
                while !failed && burst.len() < room {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(message))) => burst.push(message),
                        Some(Some(Err(_))) => failed = true,
                        _ => break,
                    }
                }
                self.take(&mut burst, stop).await?;
                if failed {
                    self.fetch_failed(&mut backoff).await;
                    break;
                }
                backoff = Duration::from_millis(10);
            }
        }
        Ok(())
    }

    async fn fetch_failed(&mut self, backoff: &mut Duration) {
        // The client reconnects on its own; wait a little and fetch again.
        self.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(1));
    }

    /// Deliveries in order: publish them into the bus, recognise
    /// redeliveries, dead-letter payloads that do not decode.
    async fn take(
        &mut self,
        burst: &mut Vec<Message>,
        stop: &AtomicBool,
    ) -> Result<(), IngressError> {
        let mut run = Vec::with_capacity(burst.len());
        for message in burst.drain(..) {
            let Ok(info) = message.info() else {
                // Not a JetStream delivery (no ack subject): nothing to track.
                continue;
            };
            let stream_sequence = info.stream_sequence;
            let delivery = info.consumer_sequence;
            let lost = self.last_delivery.is_some_and(|last| delivery > last + 1);
            self.last_delivery = Some(self.last_delivery.map_or(delivery, |l| l.max(delivery)));
            if stream_sequence > self.highest {
                if lost && self.highest > 0 {
                    // Deliveries before this one were lost on the way; the
                    // server sends them again only after the ack wait. Read
                    // the new ones among them from the stream now, so the
                    // bus gets them in stream order.
                    if !self
                        .recover(self.highest + 1, stream_sequence, &mut run, stop)
                        .await?
                    {
                        return Ok(());
                    }
                }
                // The common case: a message never delivered to us before.
                self.highest = stream_sequence;
            } else if self.acked.contains(stream_sequence) {
                // Handled and acked before; that ack was lost.
                self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                let _ = message.ack().await;
                continue;
            } else if let Some(p) = self
                .pending
                .iter_mut()
                .find(|p| p.stream == stream_sequence)
            {
                // Still in the bus: ack the newest delivery once it is handled.
                self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                p.message = Some(message);
                continue;
            }
            let (subject, payload) = (message.subject.to_string(), message.payload.clone());
            let handed = self.hand_on(
                &subject,
                payload,
                stream_sequence,
                Some(message),
                &mut run,
                stop,
            );
            if !handed.await? {
                return Ok(());
            }
        }
        self.publish(&mut run, stop).await?;
        Ok(())
    }

    /// Decodes a message into `run`, or dead-letters it (after publishing
    /// what came before it); false when the ingress stopped.
    async fn hand_on(
        &mut self,
        subject: &str,
        payload: bytes::Bytes,
        stream_sequence: u64,
        message: Option<Message>,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        match self.codec.decode(&payload) {
            Ok(event) => run.push((Some(event), stream_sequence, message)),
            Err(reason) => {
                // What came before it goes into the bus first.
                if !self.publish(run, stop).await? {
                    return Ok(false);
                }
                let reason = reason.to_string();
                if self
                    .dead_letter(subject, payload, stream_sequence, &reason)
                    .await
                {
                    // Done once the bus passed what came before it.
                    self.pending.push_back(Pending {
                        ring: self.producer.cursor(),
                        stream: stream_sequence,
                        message,
                    });
                }
                // Not sent: left unacked, so it comes again.
            }
        }
        Ok(true)
    }

    /// Reads the messages `from..until` on the consumer's subjects from the
    /// stream itself, into `run`. Their deliveries were lost; when the
    /// server sends them again they are recognised (as handled or in the
    /// bus) and acked then. False when the ingress stopped.
    async fn recover(
        &mut self,
        from: u64,
        until: u64,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        for sequence in from..until {
            let read = tokio::time::timeout(NETWORK_WAIT, self.stream.get_raw_message(sequence));
            let Ok(Ok(stored)) = read.await else {
                // Deleted since, or not readable now: its redelivery (after
                // the ack wait) still brings it, late.
                continue;
            };
            let wanted = match &self.options.filter_subject {
                Some(filter) => subject_matches(filter, stored.subject.as_str()),
                None => true,
            };
            if !wanted {
                continue;
            }
            self.counters.recovered.fetch_add(1, Ordering::Relaxed);
            let subject = stored.subject.to_string();
            let handed = self.hand_on(&subject, stored.payload, sequence, None, run, stop);
            if !handed.await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Publishes `run` into the ring in one batch and remembers each
    /// message; false when the ingress stopped first (the messages stay
    /// unacked and are delivered again).
    async fn publish(
        &mut self,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        if run.is_empty() {
            return Ok(true);
        }
        let n = run.len();
        let last = loop {
            let fill = |slots: ringbus::Slots<'_, E>| {
                for (slot, (event, ..)) in slots.zip(run.iter_mut()) {
                    *slot = event.take().expect("each event once");
                }
            };
            match self.producer.try_batch_publish(n, fill) {
                Ok(last) => break last,
                Err(_) if stop.load(Ordering::Relaxed) => {
                    // Stopping: tell the server to deliver them again now,
                    // not after the ack wait.
                    for (_, _, message) in run.drain(..) {
                        let Some(message) = message else { continue };
                        let nak = message.ack_with(AckKind::Nak(None));
                        let _ = tokio::time::timeout(NETWORK_WAIT, nak).await;
                    }
                    return Ok(false);
                }
                // Other producers took the room: wait for the stages
                // without holding the runtime's thread.
                Err(TryPublishError::Full { .. } | TryPublishError::Timeout) => {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                Err(TryPublishError::Closed) => {
                    return Err(IngressError::Bus(PublishError::Closed))
                }
                Err(_) => return Err(IngressError::Bus(PublishError::Halted)),
            }
        };
        let first = last - n as Sequence + 1;
        for (i, (_, stream, message)) in run.drain(..).enumerate() {
            self.pending.push_back(Pending {
                ring: first + i as Sequence,
                stream,
                message,
            });
        }
        self.counters
            .published
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Sends the payload to the dead-letter subject; true once the server
    /// has it (the client flushed it).
    async fn dead_letter(
        &mut self,
        subject: &str,
        payload: bytes::Bytes,
        stream_sequence: u64,
        reason: &str,
    ) -> bool {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Ringbus-Dead-Reason", reason);
        headers.insert("Ringbus-Subject", subject);
        headers.insert(
            "Ringbus-Stream-Sequence",
            stream_sequence.to_string().as_str(),
        );
        let client = self.link.client();
        let dead_letters = self.options.dead_letter_subject.clone();
        // Bounded: with the server gone the client would wait for its
        // reconnection, and the stop flag would go unread meanwhile.
        let send = async {
            client
                .publish_with_headers(dead_letters, headers, payload)
                .await
                .is_ok()
                && client.flush().await.is_ok()
        };
        let sent = tokio::time::timeout(NETWORK_WAIT, send)
            .await
            .unwrap_or(false);
        if sent {
            self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Acks every message the bus's gating stages passed.
    async fn ack_handled(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let handled = self.producer.minimum_gating_sequence();
        while self.pending.front().is_some_and(|p| p.ring <= handled) {
            let Some(Pending {
                stream, message, ..
            }) = self.pending.pop_front()
            else {
                break;
            };
            // A message read from the stream (its delivery lost) has no
            // ack subject yet: its redelivery is acked when it comes.
            if let Some(message) = message {
                if message.ack().await.is_ok() {
                    self.counters.acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Acked or not, it was handled: a redelivery is not published.
            self.acked.insert(stream, Instant::now());
        }
    }

    /// After the last fetch: waits for the bus to handle what was
    /// published, acks it; returns how many stay unacked.
    async fn drain(&mut self) -> u64 {
        let deadline = tokio::time::Instant::now() + self.options.drain_timeout;
        while !self.pending.is_empty() && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, self.ack_handled()).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = tokio::time::timeout_at(deadline + NETWORK_WAIT, self.ack_handled()).await;
        // What the bus did not handle in time: delivered again at once.
        let unacked = self.pending.len() as u64;
        for p in self.pending.drain(..) {
            if let Some(message) = p.message {
                let nak = message.ack_with(AckKind::Nak(None));
                if tokio::time::timeout(NETWORK_WAIT, nak).await.is_err() {
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(NETWORK_WAIT, self.link.client().flush()).await;
        unacked
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_as_nats_filters_do() {
        assert!(subject_matches("orders.new", "orders.new"));
        assert!(!subject_matches("orders.new", "orders.old"));
        assert!(subject_matches("orders.*", "orders.new"));
        assert!(!subject_matches("orders.*", "orders.new.eu"));
        assert!(subject_matches("orders.>", "orders.new.eu"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("*.new", "orders.new"));
        assert!(!subject_matches("orders.new", "orders.new.eu"));
        assert!(!subject_matches("orders.new.eu", "orders.new"));
    }
}
