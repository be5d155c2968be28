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
//! server sent but a dropped connection lost).
//!
//! Each stream sequence goes into the bus at most once, in increasing
//! stream order. Deliveries lost on the way (the consumer's delivery
//! sequence jumps: a dropped connection, a dead node) are read from the
//! stream directly (`next_by_subj` on the consumer's filter) before the
//! next new message, in slices of at most the ring's size; a read that
//! fails is tried again, never taken for "no message" (a "no message"
//! answer is checked against the message just delivered, which must be
//! readable). A redelivery (the server sends the lost deliveries again
//! after the ack wait, in any order) is recognised by its stream sequence,
//! whether it is waiting to be published, in the bus, or handled and
//! acked, and is not published again. A message is never acked unless it
//! was published (or dead-lettered).
//!
//! The filter, the ack wait and the backoff are the consumer's own (an
//! existing durable keeps its configuration); an existing durable whose
//! ack policy is not `Explicit`, whose filter is not the options', that
//! delivers headers only, or whose deliver policy is `LastPerSubject`
//! (its deliveries skip superseded messages, which the recovery of lost
//! deliveries would read back and publish), is refused
//! ([`LinkError::ConsumerMismatch`]).
//!
//! **One ingress per durable consumer.** Two ingresses on one durable do
//! not share its messages: each sees the other's deliveries as lost ones,
//! reads them from the stream, and publishes every message into its own
//! bus. To spread a stream over several buses, give each its own filter
//! (and durable).
//!
//! Where the guarantee is at least once (a message published again, or
//! after later ones; [`IngressReport::late`] counts the late ones):
//! * a message an earlier ingress on the same consumer was given and did
//!   not ack (its stream sequence at or below what the consumer had
//!   delivered when this ingress started) is published when it comes
//!   again, possibly after later ones, possibly a second time (the earlier
//!   bus may have handled it);
//! * a lost delivery the stream would not give back (the server answered
//!   "no message" for it and for the message delivered after it: deleted
//!   since, or a store failing every read) is published when the server
//!   delivers it again, after later ones;
//! * past 4,096 such ranges, the closest two are merged, and a redelivery
//!   (its ack lost) between them is published a second time;
//! * what the bus handled but was not acked when the ingress stopped (the
//!   server unreachable) is delivered to, and published by, the next
//!   ingress;
//! * a consumer with `max_deliver` drops a message it delivered that many
//!   times without an ack.
//!
//! Lost deliveries that cannot be read from the stream for longer than
//! [`IngressOptions::recovery_timeout`] while the client is connected (no
//! permission for `$JS.API.STREAM.MSG.GET.<stream>`, the stream deleted)
//! stop the ingress with [`IngressError::Recovery`]; nothing is acked
//! that was not published.
//!
//! The durable (or its stream) deleted on the server while the ingress
//! runs stops the ingress with [`IngressError::ConsumerGone`] (looked for
//! after three fetches in a row failed while connected, at most every 3
//! s; the link's user needs `$JS.API.CONSUMER.INFO.<stream>.<durable>`).
//! Nothing more is acked or nacked then: the ack subjects name sequences
//! that a new consumer of the same name may use for other messages. The
//! ingress does not create the durable again itself (a new durable
//! delivers the whole stream again); start a new one when that is meant.
//! Not noticed: a durable deleted and created again under a running
//! ingress before three of its fetches failed (see the guide).
//!
//! A payload that does not decode (the codec returns an error, or panics)
//! goes to the dead-letter subject, with the reason in the
//! `Ringbus-Dead-Reason` header (`the codec panicked: ..` for a panic), and
//! counts as handled once the dead letter is sent.
//!
//! A bus that refuses publishes (halted, a stage failed under a halting
//! policy, closed) stops the ingress with [`IngressError::Bus`], also
//! while its ring is full or the stream is idle.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, RawMessageError};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures_util::{FutureExt, StreamExt};
use ringbus::{PublishError, Publisher, Sequence, TryPublishError};

use crate::acked::Acked;
use crate::unrecovered::Unrecovered;

/// The longest the ingress waits on the network for a dead letter, a flush
/// or a negative ack: with the server gone, the client would wait for its
/// reconnection.
const NETWORK_WAIT: Duration = Duration::from_secs(2);
/// How often the ingress looks up from a fetch that brings nothing, to see
/// whether the client reconnected meanwhile.
const FETCH_TICK: Duration = Duration::from_millis(25);
/// After a reconnection, how much longer than the idle wait a fetch that
/// brings nothing is waited for: its request (or its end) may have been
/// lost with the connection, and the client would wait 5 s more.
const RECONNECT_GRACE: Duration = Duration::from_millis(250);
/// Failed reads of lost deliveries (while connected) before the ingress
/// may give up, however short the recovery timeout.
const RECOVERY_ATTEMPTS: u32 = 3;

use crate::link::{jetstream_failure, Link, LinkError};
use ringbus::codec::Codec;

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
    recovery_timeout: Duration,
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
            recovery_timeout: Duration::from_secs(30),
        }
    }

    /// Only the stream's messages on `subject` (wildcards allowed). An
    /// empty subject is no filter, as in NATS: every message of the stream.
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        let subject = subject.into();
        self.filter_subject = (!subject.is_empty()).then_some(subject);
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
    /// default): a message not acked by then is delivered again. An
    /// existing durable keeps its own ack wait (and backoff), which the
    /// ingress reads and goes by.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How long [`Ingress::stop`] waits for the bus to handle what was
    /// published before it acks and returns (5 s by default). With the
    /// server gone `stop` returns within about this long after it was
    /// called (plus up to 2 s for each undecodable payload of the batch in
    /// hand, whose dead letter cannot be sent): acks and naks do not wait
    /// for the server (what could not be acked counts as `unacked`, and is
    /// delivered again).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long reads of lost deliveries from the stream may keep failing
    /// while the client is connected (and at least 3 times) before the
    /// ingress stops with [`IngressError::Recovery`] (30 s by default:
    /// long enough for a clustered stream to elect a new leader). Failures
    /// while the client is disconnected do not count: it waits for the
    /// server, as its fetches do.
    pub fn recovery_timeout(mut self, timeout: Duration) -> Self {
        self.recovery_timeout = timeout;
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
    /// Messages acknowledged (after the bus handled them), each on its own,
    /// and written out to the server's connection (a flush of the client
    /// succeeded). Best effort: an ack written to a connection that then
    /// broke is lost, and its message delivered again after the ack wait.
    pub acked: u64,
    /// Fetches that failed (the server gone, a timeout, a request lost
    /// with a dropped connection); the ingress waited and fetched again.
    pub fetch_errors: u64,
    /// Messages published that were not acked when it stopped (the bus had
    /// not handled them in the drain timeout, or their acks were never
    /// written out: the server was gone): they will be delivered again.
    pub unacked: u64,
    /// Messages whose delivery was lost on the way (a dropped connection,
    /// a dead node) and which were read from the stream directly, so the bus
    /// still got them in stream order.
    pub recovered: u64,
    /// Failed reads of lost deliveries from the stream (an error, no
    /// answer in time, or a "no message" answer that the message delivered
    /// after them showed wrong); each was tried again.
    pub recovery_errors: u64,
    /// Redeliveries published as new messages, possibly after later ones
    /// (out of stream order): of a message an earlier ingress on the
    /// consumer was given and did not ack, or of a lost delivery the
    /// stream would not give back.
    pub late: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    redelivered: AtomicU64,
    dead_lettered: AtomicU64,
    acked: AtomicU64,
    fetch_errors: AtomicU64,
    recovered: AtomicU64,
    recovery_errors: AtomicU64,
    late: AtomicU64,
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
            recovery_errors: get(&self.recovery_errors),
            late: get(&self.late),
            unacked,
        }
    }
}

/// Why an ingress stopped on its own.
#[derive(Debug)]
#[non_exhaustive]
pub enum IngressError {
    /// The bus refused the publish (halted, closed, or a batch larger than
    /// the ring, which the ingress never asks for); the messages were not
    /// acked and will be delivered again.
    Bus(ringbus::PublishError),
    /// The bus refused the publish for a reason this version of the
    /// ingress does not know; the messages were not acked.
    Refused(ringbus::TryPublishError),
    /// The ingress task panicked.
    Panicked(String),
    /// Deliveries were lost on the way and reading them from the stream
    /// kept failing (for the recovery timeout, while connected): no
    /// permission for `$JS.API.STREAM.MSG.GET.<stream>`, the stream
    /// deleted, a store that fails. Nothing from `first` on was published
    /// or acked; the server delivers it again to the next ingress.
    Recovery {
        /// The stream.
        stream: String,
        /// The durable consumer.
        durable: String,
        /// The first stream sequence not read back.
        first: u64,
        /// The last stream sequence not read back (the one delivered after
        /// the lost ones is `last + 1`).
        last: u64,
        /// Failed reads (while connected) before the ingress gave up.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The durable consumer is gone from the server: deleted, with its
    /// stream or on its own. What the bus had not handled was neither
    /// acked nor nacked; start a new ingress to go on (on a new durable
    /// the server delivers the stream again from its start).
    ConsumerGone {
        /// The stream.
        stream: String,
        /// The durable consumer.
        durable: String,
        /// What the server said.
        reason: String,
    },
}

impl fmt::Display for IngressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "the bus refused the ingress's publish: {e}"),
            Self::Refused(e) => write!(f, "the bus refused the ingress's publish: {e}"),
            Self::Panicked(m) => write!(f, "the ingress task panicked: {m}"),
            Self::Recovery {
                stream,
                durable,
                first,
                last,
                attempts,
                reason,
            } => write!(
                f,
                "the ingress of consumer `{durable}` lost deliveries and cannot read them \
                 (stream sequences {first} to {last}) from stream `{stream}`: {reason} \
                 ({attempts} failed reads); it stopped without publishing or acking them, \
                 and the server delivers them again"
            ),
            Self::ConsumerGone {
                stream,
                durable,
                reason,
            } => write!(
                f,
                "the durable consumer `{durable}` of stream `{stream}` is gone from the \
                 server ({reason}); the ingress stopped without acking what was in the bus: \
                 start a new ingress to go on"
            ),
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

/// What the ingress task hands back: the producer, how many stay unacked,
/// and why it stopped. Dropped without being taken (an `Ingress` dropped
/// inside an async context), it drops the producer on a thread of its own.
type Ended<P> = OffThread<(P, u64, Option<IngressError>)>;

/// Holds the producer (the task's, or what the task hands back) and drops
/// it on a thread of its own if dropped holding it: dropping the last
/// producer drains the bus and joins its stages, which must not happen on
/// the runtime's thread (an egress stage of the same link would wait on
/// that very thread). The task's future is dropped there if it ends by a
/// panic (the codec's are caught: see `hand_on`).
struct OffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> std::ops::Deref for OffThread<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("taken only at the end")
    }
}

impl<T: Send + 'static> std::ops::DerefMut for OffThread<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("taken only at the end")
    }
}

impl<T: Send + 'static> Drop for OffThread<T> {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("ringbus-nats-drop".into())
                .spawn(move || drop(held));
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

/// Events decoded and waiting to be published into the ring, in the order
/// they were taken, with their stream sequence and delivery (none for one
/// read from the stream); never more than the ring holds.
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

/// Reads of lost deliveries failing in a row.
struct Failing {
    /// Failures while the client was connected.
    attempts: u32,
    /// When the first of them happened.
    since: Option<Instant>,
    /// The wait before the next read.
    backoff: Duration,
}

impl Default for Failing {
    fn default() -> Self {
        Self {
            attempts: 0,
            since: None,
            backoff: Duration::from_millis(10),
        }
    }
}

/// A message published into the bus and not acked yet.
struct Pending {
    ring: Sequence,
    stream: u64,
    message: Option<Message>,
}

struct Run<E, C, P: Send + 'static> {
    link: Link,
    options: IngressOptions,
    codec: C,
    producer: OffThread<P>,
    counters: Arc<Counters>,
    /// Acks queued on the client since the last flush that succeeded.
    unflushed: u64,
    pending: VecDeque<Pending>,
    /// Stream sequences at or below the floor handled lately, to recognise
    /// a redelivery whose ack was lost (above the floor, every one below
    /// `highest` that is not waiting or in the bus was handled).
    acked: Acked,
    /// The highest stream sequence taken (delivered or read from the
    /// stream). Every message of the consumer between `floor` and it was
    /// taken, so a delivery at or below it is a redelivery.
    highest: u64,
    /// The last stream sequence the consumer had delivered when the
    /// ingress started: a delivery at or below it may be one an earlier
    /// ingress was given and did not ack.
    floor: u64,
    /// The consumer (delivery) sequence of the last delivery: a jump says
    /// deliveries were lost on the way (a dropped connection, a dead node).
    /// It may go back (a new consumer leader whose state lagged sends again
    /// from there): the next jump counts from where it went.
    last_delivery: u64,
    /// Deliveries were lost and not all read from the stream yet: the lost
    /// ones may lie anywhere below the next first delivery.
    lost: bool,
    /// Stream sequences whose dead letter could not be sent: when they
    /// come again, they are dead-lettered again.
    unsent_dead_letters: BTreeSet<u64>,
    /// Stream sequences above the floor, up to `highest`, whose delivery
    /// was lost and which the stream did not give back: when they come
    /// again they are published (late), not taken for handled.
    unrecovered: Unrecovered,
    /// The consumer's filter (`>` for none), as the server has it.
    filter: String,
    /// The most messages a fetch may ask for (the durable's `max_batch`),
    /// and how long the server keeps a fetch open (the idle wait, or the
    /// durable's `max_expires` if shorter): a fetch over either is refused.
    fetch_at_most: usize,
    expires: Duration,
    /// The stream, to read lost deliveries from directly.
    stream: async_nats::jetstream::stream::Stream,
    /// Fetches failed in a row (reset by a delivery), and when the durable
    /// was last looked for on the server.
    failed_fetches: u32,
    looked_for: Option<Instant>,
    /// The durable is gone: nothing more is acked or nacked.
    gone: bool,
    /// An ack of a redelivery timed out in this burst: the rest are not
    /// waited for (they come again after the ack wait).
    acks_stalled: bool,
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
        P: Publisher<E> + Send + 'static,
    {
        let what = format!(
            "looking up or creating durable {:?} on stream {:?}",
            options.durable, options.stream
        );
        let (stream, consumer) = link.block_on_request(&what, consumer_for(&link, &options))?;
        let info = consumer.cached_info();
        // Where the consumer stands: what it delivered before us (to an
        // earlier ingress) is below the floor.
        let (floor, last_delivery) = (
            info.delivered.stream_sequence,
            info.delivered.consumer_sequence,
        );
        // Acked sequences are kept while the server may still redeliver
        // them: the consumer's own ack wait, or its longest backoff.
        let config = &info.config;
        let redelivery = config
            .backoff
            .iter()
            .copied()
            .chain([config.ack_wait])
            .max()
            .filter(|wait| !wait.is_zero())
            .unwrap_or(options.ack_wait);
        let keep = redelivery * 2 + Duration::from_secs(5);
        // One filter at most (checked): the lost deliveries are read on it.
        let filter = match (config.filter_subject.as_str(), &config.filter_subjects[..]) {
            ("", [one]) => one.clone(),
            ("", _) => ">".to_owned(),
            (one, _) => one.to_owned(),
        };
        let fetch_at_most = usize::try_from(config.max_batch)
            .ok()
            .filter(|&most| most > 0)
            .unwrap_or(usize::MAX);
        let expires = match config.max_expires {
            most if most.is_zero() => options.idle_wait,
            most => options.idle_wait.min(most),
        };
        let run_link = link.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut run = Run {
            link,
            options,
            codec,
            producer: OffThread(Some(producer)),
            counters: Arc::clone(&counters),
            unflushed: 0,
            pending: VecDeque::new(),
            acked: Acked::new(keep),
            highest: floor,
            floor,
            last_delivery,
            lost: false,
            unsent_dead_letters: BTreeSet::new(),
            unrecovered: Unrecovered::default(),
            filter,
            fetch_at_most,
            expires,
            stream,
            failed_fetches: 0,
            looked_for: None,
            gone: false,
            acks_stalled: false,
            _event: std::marker::PhantomData,
        };
        let stopping = Arc::clone(&stop);
        // A task beside the client's own: a delivery reaches the ring
        // without a hand-off to another thread.
        let task = run_link.handle().spawn(async move {
            let error = run.run(consumer, &stopping).await.err();
            let unacked = run.drain().await;
            let producer = run.producer.0.take().expect("taken once");
            OffThread(Some((producer, unacked, error)))
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

    /// True once the ingress stopped on its own (an [`IngressError`]: the
    /// bus refused it, lost deliveries could not be read back, or the
    /// durable is gone).
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
    let stream = match link.jetstream().get_stream(&options.stream).await {
        Ok(stream) => stream,
        Err(e) => {
            let reason = format!("stream `{}`: {e}", options.stream);
            return Err(jetstream_failure(link, reason).await);
        }
    };
    let config = pull::Config {
        durable_name: Some(options.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        filter_subject: options.filter_subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let consumer = match stream
        .get_or_create_consumer(&options.durable, config)
        .await
    {
        Ok(consumer) => consumer,
        Err(e) => {
            let reason = format!("consumer `{}`: {e}", options.durable);
            return Err(jetstream_failure(link, reason).await);
        }
    };
    check_consumer(options, &consumer.cached_info().config)?;
    Ok((stream, consumer))
}

/// An existing durable keeps its own configuration: refuses one the
/// ingress cannot work with (its acks would cover messages a dropped
/// connection lost, or not exist) or whose filter is not the options'
/// (the lost deliveries would be read from the wrong subjects).
fn check_consumer(options: &IngressOptions, config: &consumer::Config) -> Result<(), LinkError> {
    let mismatch = |existing: String, wanted: String| LinkError::ConsumerMismatch {
        stream: options.stream.clone(),
        durable: options.durable.clone(),
        existing,
        wanted,
    };
    if config.ack_policy != AckPolicy::Explicit {
        return Err(mismatch(
            format!("ack policy {:?}", config.ack_policy),
            "ack policy Explicit".into(),
        ));
    }
    if config.deliver_policy == DeliverPolicy::LastPerSubject {
        // It delivers the last message of each subject it found when it
        // was made, then every new one: its deliveries skip superseded
        // messages, which reading lost deliveries back from the stream
        // (every message on the filter between two deliveries) would
        // publish.
        return Err(mismatch(
            "deliver policy LastPerSubject".into(),
            "a deliver policy that delivers every message from its start \
             (All, New, Last, ByStartSequence or ByStartTime)"
                .into(),
        ));
    }
    if config.headers_only {
        // Every payload would come empty, and fail to decode.
        return Err(mismatch(
            "headers only (no payloads)".into(),
            "whole messages".into(),
        ));
    }
    let mut existing: Vec<&str> = config.filter_subjects.iter().map(String::as_str).collect();
    if !config.filter_subject.is_empty() {
        existing.push(&config.filter_subject);
    }
    existing.sort_unstable();
    existing.dedup();
    let wanted: Vec<&str> = options.filter_subject.iter().map(String::as_str).collect();
    if existing != wanted {
        let describe = |filters: &[&str]| match filters {
            [] => "no filter subject".to_owned(),
            [one] => format!("filter subject `{one}`"),
            many => format!("filter subjects `{}`", many.join("`, `")),
        };
        return Err(mismatch(describe(&existing), describe(&wanted)));
    }
    Ok(())
}

impl<E, C: Codec<E>, P: Publisher<E> + Send + 'static> Run<E, C, P> {
    async fn run(&mut self, consumer: PullConsumer, stop: &AtomicBool) -> Result<(), IngressError> {
        let mut backoff = Duration::from_millis(10);
        while !stop.load(Ordering::Relaxed) {
            self.ack_handled().await;
            // A halted or closed bus: stop now. A full ring would never
            // make room (the publish below, which would learn it, is not
            // tried then), and an idle stream would not be read again.
            if let Some(refused) = self.refusal() {
                return Err(refused);
            }
            let room = self.producer.remaining_capacity().min(self.options.batch);
            if room == 0 {
                // A full ring: fetch nothing until the stages make room.
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            let connects = self.connects();
            let requested = tokio::time::Instant::now();
            // Bounded: with the server gone the client's command channel
            // fills (it is not read while reconnecting), and the request
            // would wait for the server, the stop flag unread.
            let fetched = consumer
                .fetch()
                .max_messages(room.min(self.fetch_at_most))
                .expires(self.expires)
                .messages();
            let mut messages = match or_stop(fetched, stop, NETWORK_WAIT).await {
                Some(Ok(messages)) => messages,
                None if stop.load(Ordering::Relaxed) => return Ok(()),
                _ => {
                    self.fetch_failed(&mut backoff, stop).await?;
                    continue;
                }
            };
            let mut burst = Vec::with_capacity(room);
            let mut reconnected = None;
            loop {
                let first = match tokio::time::timeout(FETCH_TICK, messages.next()).await {
                    Ok(Some(first)) => first,
                    Ok(None) => break,
                    // Nothing yet, and told to stop: what this fetch still
                    // brings is not taken (nor acked: delivered again).
                    Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
                    Err(_) => {
                        // Nothing yet. The server ends the fetch after the
                        // idle wait; when its request or that end was lost
                        // with a dropped connection, the client would wait
                        // 5 s more. Fetch again instead (what the server
                        // still sends to this fetch is lost, and read from
                        // the stream once the next fetch shows the gap).
                        let now = tokio::time::Instant::now();
                        if reconnected.is_none() && self.connects() != connects {
                            reconnected = Some(now);
                        }
                        let given_up = match reconnected {
                            Some(at) => now >= at + self.expires + RECONNECT_GRACE,
                            None => now >= requested + self.expires + NETWORK_WAIT,
                        };
                        if given_up {
                            self.fetch_failed(&mut backoff, stop).await?;
                            break;
                        }
                        continue;
                    }
                };
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
                if !self.take(&mut burst, stop).await? {
                    return Ok(());
                }
                if failed {
                    self.fetch_failed(&mut backoff, stop).await?;
                    break;
                }
                backoff = Duration::from_millis(10);
                self.failed_fetches = 0;
            }
        }
        Ok(())
    }

    /// True when the server reads the next message on a subject
    /// (`next_by_subj`, nats-server 2.9 on); an older one is read message
    /// by message.
    fn reads_by_subject(&self) -> bool {
        let info = self.link.client().server_info();
        let mut parts = info
            .version
            .split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 9)
    }

    /// How many times the client connected (the first time included).
    fn connects(&self) -> u64 {
        self.link
            .client()
            .statistics()
            .connects
            .load(Ordering::Relaxed)
    }

    async fn fetch_failed(
        &mut self,
        backoff: &mut Duration,
        stop: &AtomicBool,
    ) -> Result<(), IngressError> {
        // A fetch to a consumer that is gone gets no answer at all (the
        // server drops the request; only one already waiting when the
        // consumer was deleted gets a 409): after a few failed fetches in a
        // row, ask whether it is there (at most every few seconds: a
        // connection that keeps dropping fails fetches too, and each
        // question may wait for an answer).
        self.failed_fetches += 1;
        if self.failed_fetches >= 3
            && self
                .looked_for
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(3))
        {
            self.looked_for = Some(Instant::now());
            self.check_consumer().await?;
        }
        // The client reconnects on its own; wait a little (less when told
        // to stop) and fetch again.
        self.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
        let _ = or_stop(std::future::pending::<()>(), stop, *backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(1));
        Ok(())
    }

    /// `ConsumerGone` when the server says the durable (or its stream) does
    /// not exist; `Ok` otherwise, also when the server does not answer in
    /// time (its trouble: the fetches go on failing and being retried).
    async fn check_consumer(&mut self) -> Result<(), IngressError> {
        if self.link.client().connection_state() != State::Connected {
            return Ok(());
        }
        let asked = self.stream.consumer_info(&self.options.durable);
        let reason = match tokio::time::timeout(Duration::from_secs(1), asked).await {
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                format!("{e}")
            }
            _ => return Ok(()),
        };
        self.gone = true;
        Err(IngressError::ConsumerGone {
            stream: self.options.stream.clone(),
            durable: self.options.durable.clone(),
            reason,
        })
    }

    /// Deliveries in order: publish them into the bus, read lost deliveries
    /// from the stream, recognise redeliveries, dead-letter payloads that
    /// do not decode. False when the ingress stopped.
    async fn take(
        &mut self,
        burst: &mut Vec<Message>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        let mut run = Vec::with_capacity(burst.len());
        self.acks_stalled = false;
        let taken = self.take_each(burst, &mut run, stop).await;
        if !matches!(taken, Ok(true)) {
            // Stopping: what was not published is delivered again now
            // (not to a consumer that is gone: its ack subjects may be
            // another's now).
            if !self.gone {
                nak_all(&mut run, self.link.client()).await;
            }
            return taken;
        }
        self.publish(&mut run, stop).await
    }

    /// [`take`](Run::take)'s loop over the burst, into `run`.
    async fn take_each(
        &mut self,
        burst: &mut Vec<Message>,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        for message in burst.drain(..) {
            let Ok(info) = message.info() else {
                // Not a JetStream delivery (no ack subject): nothing to track.
                continue;
            };
            let stream_sequence = info.stream_sequence;
            let delivery = info.consumer_sequence;
            let first_delivery = info.delivered == 1;
            if delivery > self.last_delivery + 1 {
                // Deliveries before this one were lost on the way; the
                // server sends them again only after the ack wait, in any
                // order.
                self.lost = true;
            }
            self.last_delivery = delivery;
            let going_on = if stream_sequence > self.highest {
                self.take_new(message, stream_sequence, first_delivery, run, stop)
                    .await?
            } else {
                self.take_again(message, stream_sequence, run, stop).await?
            };
            if !going_on {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A message above every one taken: the lost ones below it first (read
    /// from the stream), then it. False when the ingress stopped.
    async fn take_new(
        &mut self,
        message: Message,
        stream_sequence: u64,
        first_delivery: bool,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        if self.lost {
            match self
                .recover(self.highest + 1, stream_sequence, run, stop)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => {
                    // Not published: delivered again at once.
                    let nak = message.ack_with(AckKind::Nak(None));
                    let _ = tokio::time::timeout(NETWORK_WAIT, nak).await;
                    return Err(e);
                }
            }
            // The server sends first deliveries in stream order: every lost
            // one is below a first delivery. A redelivery (its own first
            // delivery lost) may come before lost ones above it: look again
            // at the next new message.
            if first_delivery {
                self.lost = false;
            }
        }
        self.highest = stream_sequence;
        let (subject, payload) = (message.subject.to_string(), message.payload.clone());
        self.hand_on(&subject, payload, stream_sequence, Some(message), run, stop)
            .await
    }

    /// A delivery at or below the highest message taken: a redelivery.
    /// False when the ingress stopped.
    async fn take_again(
        &mut self,
        message: Message,
        stream_sequence: u64,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        if let Some(waiting) = run.iter_mut().find(|(_, s, _)| *s == stream_sequence) {
            // Waiting to be published (read from the stream, or delivered
            // twice in one burst): ack the newest delivery once handled.
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            waiting.2 = Some(message);
        } else if let Some(p) = self
            .pending
            .iter_mut()
            .find(|p| p.stream == stream_sequence)
        {
            // In the bus: ack the newest delivery once handled.
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            p.message = Some(message);
        } else if self.unsent_dead_letters.remove(&stream_sequence) {
            // Its dead letter could not be sent: try again.
            let (subject, payload) = (message.subject.to_string(), message.payload.clone());
            return self
                .hand_on(&subject, payload, stream_sequence, Some(message), run, stop)
                .await;
        } else if self.unrecovered.remove(stream_sequence) {
            // Its delivery was lost and the stream did not give it back
            // (deleted, or a failing store): new to the bus, after later
            // ones.
            self.counters.late.fetch_add(1, Ordering::Relaxed);
            let (subject, payload) = (message.subject.to_string(), message.payload.clone());
            return self
                .hand_on(&subject, payload, stream_sequence, Some(message), run, stop)
                .await;
        } else if stream_sequence > self.floor || self.acked.contains(stream_sequence) {
            // Handled (its ack was lost): every message above the floor and
            // up to the highest was taken by this ingress (published, or
            // dead-lettered; one the stream did not give back is in
            // `unrecovered`), and it is no longer waiting or in the bus.
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            // Not while disconnected or stopping, nor once an ack of this
            // burst timed out (the client's command channel full): each
            // would wait up to `NETWORK_WAIT`; the message comes again
            // after the ack wait and is recognised again.
            if !self.acks_stalled
                && !stop.load(Ordering::Relaxed)
                && self.link.client().connection_state() == State::Connected
                && tokio::time::timeout(NETWORK_WAIT, message.ack())
                    .await
                    .is_err()
            {
                self.acks_stalled = true;
            }
        } else {
            // Given to an earlier ingress on this consumer, which did not
            // ack it: new to this one (at least once, after later ones).
            self.counters.late.fetch_add(1, Ordering::Relaxed);
            let (subject, payload) = (message.subject.to_string(), message.payload.clone());
            return self
                .hand_on(&subject, payload, stream_sequence, Some(message), run, stop)
                .await;
        }
        Ok(true)
    }

    /// Decodes a message into `run` (publishing `run` once it holds as much
    /// as the ring), or dead-letters it (after publishing what came before
    /// it); false when the ingress stopped.
    async fn hand_on(
        &mut self,
        subject: &str,
        payload: bytes::Bytes,
        stream_sequence: u64,
        message: Option<Message>,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        // A codec that panics on a payload is a payload that does not
        // decode: dead-lettered like one, rather than ending the ingress
        // (whose next start on this durable would panic at it again).
        match ringbus::codec::decode_catching(&mut self.codec, &payload) {
            Ok(event) => {
                run.push((Some(event), stream_sequence, message));
                if run.len() >= self.producer.capacity() {
                    // Never more waiting than the ring holds (a long run of
                    // lost deliveries read from the stream).
                    return self.publish(run, stop).await;
                }
            }
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
                } else {
                    // Not sent: left unacked, so it comes again (one read
                    // from the stream too: its delivery was lost), and is
                    // dead-lettered then.
                    self.unsent_dead_letters.insert(stream_sequence);
                }
            }
        }
        Ok(true)
    }

    /// Reads the consumer's messages `from..until` from the stream itself,
    /// in stream order, into `run`. Their deliveries were lost; when the
    /// server sends them again they are recognised (waiting, in the bus or
    /// handled) and acked then. A read that fails is tried again, never
    /// skipped: skipped, the message would come again after the ones above
    /// it. A "no message" answer is checked against `until`, which was just
    /// delivered: readable, the answer was wrong (a store error, which the
    /// server reports so); not readable either, what is left is marked
    /// unrecovered (published when it comes again, if it still exists).
    /// False when the ingress stopped; an error once reads failed for the
    /// recovery timeout while connected.
    async fn recover(
        &mut self,
        from: u64,
        until: u64,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        let subject = self.filter.clone();
        let by_subject = self.reads_by_subject();
        let mut next = from;
        let mut failing = Failing::default();
        while next < until {
            // The first message at or after `next` on the consumer's
            // subjects (`next_by_subj`: the server skips the messages of
            // other subjects and deleted ones), or the one at `next`.
            let stored = match read(&self.stream, by_subject, &subject, next).await {
                Ok(stored) => stored,
                Err(Some(e)) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                    if !by_subject {
                        // Deleted since, or not readable (the server says
                        // the same of both): if it exists, it comes again.
                        self.unrecovered.insert(next, next);
                        next += 1;
                        failing = Failing::default();
                        continue;
                    }
                    // "None left": `until` itself must be readable.
                    let reason = match read(&self.stream, false, &subject, until).await {
                        Ok(_) => format!(
                            "the stream answered `no message` from sequence {next} on `{subject}`, \
                             but has message {until} there"
                        ),
                        Err(Some(e))
                            if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) =>
                        {
                            // Gone too (a purge, a limit) or nothing is
                            // readable: those that still exist come again.
                            self.unrecovered.insert(next, until - 1);
                            break;
                        }
                        Err(e) => self.read_failure(e.as_ref(), until),
                    };
                    if !self
                        .recovery_failed(&mut failing, reason, next, until, stop)
                        .await?
                    {
                        return Ok(false);
                    }
                    continue;
                }
                Err(e) => {
                    let reason = self.read_failure(e.as_ref(), next);
                    if !self
                        .recovery_failed(&mut failing, reason, next, until, stop)
                        .await?
                    {
                        return Ok(false);
                    }
                    continue;
                }
            };
            failing = Failing::default();
            if stored.sequence >= until {
                break;
            }
            next = stored.sequence.max(next) + 1;
            if !subject_matches(&subject, stored.subject.as_str()) {
                // Read by sequence: a message of another subject.
                continue;
            }
            self.counters.recovered.fetch_add(1, Ordering::Relaxed);
            let subject = stored.subject.to_string();
            let handed = self.hand_on(&subject, stored.payload, stored.sequence, None, run, stop);
            if !handed.await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What a failed read at `sequence` says.
    fn read_failure(&self, error: Option<&RawMessageError>, sequence: u64) -> String {
        match error {
            Some(e) => format!("reading sequence {sequence}: {e}"),
            None => format!(
                "no answer in {NETWORK_WAIT:?} to $JS.API.STREAM.MSG.GET.{} \
                 (the server drops a request its user may not publish: check the permissions)",
                self.options.stream
            ),
        }
    }

    /// A failed read of lost deliveries `first..until`: counts it, acks
    /// what the bus passed meanwhile, waits a little. False when the
    /// ingress stopped; an error once reads failed for the recovery timeout
    /// (and at least [`RECOVERY_ATTEMPTS`] times) while the client was
    /// connected.
    async fn recovery_failed(
        &mut self,
        failing: &mut Failing,
        reason: String,
        first: u64,
        until: u64,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        self.counters
            .recovery_errors
            .fetch_add(1, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // While disconnected the ingress waits for the server, as its
        // fetches do.
        if self.link.client().connection_state() == State::Connected {
            failing.attempts += 1;
            let since = *failing.since.get_or_insert_with(Instant::now);
            if failing.attempts >= RECOVERY_ATTEMPTS
                && since.elapsed() >= self.options.recovery_timeout
            {
                return Err(IngressError::Recovery {
                    stream: self.options.stream.clone(),
                    durable: self.options.durable.clone(),
                    first,
                    last: until - 1,
                    attempts: failing.attempts,
                    reason,
                });
            }
        }
        self.ack_handled().await;
        tokio::time::sleep(failing.backoff).await;
        failing.backoff = (failing.backoff * 2).min(Duration::from_secs(1));
        Ok(true)
    }

    /// Why the bus refuses publishes, if it does (halted, a stage failed
    /// under a halting policy, closed): what an empty batch is answered.
    fn refusal(&mut self) -> Option<IngressError> {
        match self.producer.try_batch_publish(0, |_| {}) {
            Err(TryPublishError::Halted) => Some(IngressError::Bus(PublishError::Halted)),
            Err(TryPublishError::Closed) => Some(IngressError::Bus(PublishError::Closed)),
            _ => None,
        }
    }

    /// Publishes `run` into the ring, in batches of at most the room the
    /// ring has (one slot when it has none: the stages free it), and
    /// remembers each message; false when the ingress stopped first. What
    /// was not published is not acked (nak'ed when it has a delivery): it
    /// is delivered again. Order holds in batches of any size; waiting for
    /// room for all of `run` at once could wait forever on a bus whose
    /// other producers never let the ring empty.
    async fn publish(
        &mut self,
        run: &mut ToPublish<E>,
        stop: &AtomicBool,
    ) -> Result<bool, IngressError> {
        while !run.is_empty() {
            let (last, n) = loop {
                let n = run
                    .len()
                    .min(self.producer.remaining_capacity().max(1))
                    .min(self.producer.capacity());
                let fill = |slots: ringbus::BatchMut<'_, E>| {
                    for (slot, (event, ..)) in slots.zip(run.iter_mut()) {
                        *slot = event.take().expect("each event once");
                    }
                };
                let refused = match self.producer.try_batch_publish(n, fill) {
                    Ok(last) => break (last, n),
                    // Other producers took the room, or the stages lag:
                    // wait for them without holding the runtime's thread,
                    // acking what they pass meanwhile.
                    Err(TryPublishError::Full { .. } | TryPublishError::Timeout)
                        if !stop.load(Ordering::Relaxed) =>
                    {
                        self.ack_handled().await;
                        tokio::time::sleep(Duration::from_micros(100)).await;
                        continue;
                    }
                    // Stopping.
                    Err(TryPublishError::Full { .. } | TryPublishError::Timeout) => None,
                    Err(TryPublishError::Halted) => Some(IngressError::Bus(PublishError::Halted)),
                    Err(TryPublishError::Closed) => Some(IngressError::Bus(PublishError::Closed)),
                    Err(TryPublishError::BatchTooLarge {
                        requested,
                        capacity,
                    }) => Some(IngressError::Bus(PublishError::BatchTooLarge {
                        requested,
                        capacity,
                    })),
                    Err(other) => Some(IngressError::Refused(other)),
                };
                // Tell the server to deliver them again now, not after the
                // ack wait.
                nak_all(run, self.link.client()).await;
                return refused.map_or(Ok(false), Err);
            };
            let first = last - n as Sequence + 1;
            for (i, (_, stream, message)) in run.drain(..n).enumerate() {
                self.pending.push_back(Pending {
                    ring: first + i as Sequence,
                    stream,
                    message,
                });
            }
            self.counters
                .published
                .fetch_add(n as u64, Ordering::Relaxed);
        }
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

    /// Acks every message the bus's gating stages passed, in order; stops
    /// at one whose ack fails or takes too long (the server gone: the
    /// client's command channel fills while it reconnects), which stays
    /// pending: tried again later, counted unacked and nak'ed if the
    /// ingress stops first. Cancelled, it leaves the message it was acking
    /// pending too.
    async fn ack_handled(&mut self) {
        if self.pending.is_empty() && self.unflushed == 0 {
            return;
        }
        let handled = self.producer.minimum_gating_sequence();
        // Not while disconnected: an ack then waits (up to `NETWORK_WAIT`)
        // once the client's command channel is full, at every pass of the
        // loops that call this; acked once the client is back.
        let connected = self.link.client().connection_state() == State::Connected;
        while let Some(front) = self.pending.front() {
            if front.ring > handled || (front.message.is_some() && !connected) {
                break;
            }
            // A message read from the stream (its delivery lost) has no
            // ack subject yet: its redelivery is acked when it comes.
            if let Some(message) = &front.message {
                match tokio::time::timeout(NETWORK_WAIT, message.ack()).await {
                    // Queued on the client, not sent yet: counted once
                    // a flush wrote it out (below).
                    Ok(Ok(())) => self.unflushed += 1,
                    _ => break,
                }
            }
            let Some(Pending { stream, .. }) = self.pending.pop_front() else {
                break;
            };
            // Handled: a redelivery (its ack lost) is not published.
            if stream <= self.floor {
                self.acked.insert(stream, Instant::now());
            }
        }
        // An ack's `Ok` says only that the client queued it (also while
        // disconnected): `acked` counts those a flush wrote to the server's
        // connection; the rest count as unacked if the ingress stops first.
        // Not while disconnected: a flush then waits for the reconnection,
        // and every pass of the loops that call this would wait it out.
        if self.unflushed > 0 && connected {
            self.flush().await;
        }
    }

    /// Flushes the client (bounded in time); once it succeeds, the acks it
    /// held count as acked. Returns how many.
    async fn flush(&mut self) -> u64 {
        let flushed = tokio::time::timeout(NETWORK_WAIT, self.link.client().flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            return 0;
        }
        let sent = std::mem::take(&mut self.unflushed);
        self.counters.acked.fetch_add(sent, Ordering::Relaxed);
        sent
    }

    /// After the last fetch: waits for the bus to handle what was
    /// published, acks it; returns how many stay unacked.
    async fn drain(&mut self) -> u64 {
        if self.gone {
            // Neither acked nor nacked (their ack subjects may be a new
            // consumer's): counted unacked.
            let unacked = self.pending.len() as u64 + self.unflushed;
            self.pending.clear();
            return unacked;
        }
        let deadline = tokio::time::Instant::now() + self.options.drain_timeout;
        while !self.pending.is_empty() && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, self.ack_handled()).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // With the server gone, nothing more goes out: the acks and naks
        // would only wait (up to `NETWORK_WAIT` each) for a connection, so
        // `stop` returns about the drain timeout after it was asked to.
        let connected = self.link.client().connection_state() == State::Connected;
        if connected {
            let _ = tokio::time::timeout_at(deadline + NETWORK_WAIT, self.ack_handled()).await;
        }
        // What the bus did not handle in time, or whose ack did not go
        // out: delivered again at once (those acked but never written out
        // come again after the ack wait).
        let mut unacked = self.pending.len() as u64 + self.unflushed;
        if !connected {
            self.pending.clear();
            return unacked;
        }
        for p in self.pending.drain(..) {
            if let Some(message) = p.message {
                let nak = message.ack_with(AckKind::Nak(None));
                if tokio::time::timeout(NETWORK_WAIT, nak).await.is_err() {
                    break;
                }
            }
        }
        // The naks, and the acks the client held if it came back in time.
        unacked -= self.flush().await;
        unacked
    }
}

/// Reads the first message on `subject` at or after `sequence` from
/// `stream`, or (not `by_subject`) the one at `sequence`; bounded in time
/// (`None`: no answer in time).
async fn read(
    stream: &async_nats::jetstream::stream::Stream,
    by_subject: bool,
    subject: &str,
    sequence: u64,
) -> Result<async_nats::jetstream::message::StreamMessage, Option<RawMessageError>> {
    let read = async {
        if by_subject {
            stream
                .get_first_raw_message_by_subject(subject, sequence)
                .await
        } else {
            stream.get_raw_message(sequence).await
        }
    };
    match tokio::time::timeout(NETWORK_WAIT, read).await {
        Ok(Ok(stored)) => Ok(stored),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// Naks every delivery in `run` (the server delivers them again at once)
/// and empties it.
async fn nak_all<E>(run: &mut ToPublish<E>, client: &async_nats::Client) {
    // With the server gone (or a nak not taken in time) the rest wait for
    // nothing: they come again after the ack wait.
    let connected = client.connection_state() == State::Connected;
    for (_, _, message) in run.drain(..) {
        let Some(message) = message.filter(|_| connected) else {
            continue;
        };
        let nak = message.ack_with(AckKind::Nak(None));
        if tokio::time::timeout(NETWORK_WAIT, nak).await.is_err() {
            break;
        }
    }
}

/// `fut`'s output, or `None` once `limit` passed or `stop` was set (looked
/// at every `FETCH_TICK`).
async fn or_stop<F: std::future::Future>(
    fut: F,
    stop: &AtomicBool,
    limit: Duration,
) -> Option<F::Output> {
    let deadline = tokio::time::Instant::now() + limit;
    tokio::pin!(fut);
    loop {
        let tick = deadline.min(tokio::time::Instant::now() + FETCH_TICK);
        match tokio::time::timeout_at(tick, &mut fut).await {
            Ok(output) => return Some(output),
            Err(_) if stop.load(Ordering::Relaxed) => return None,
            Err(_) if tokio::time::Instant::now() >= deadline => return None,
            Err(_) => {}
        }
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
