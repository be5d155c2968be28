//! The egress stage: each event of a bus, encoded, to a JetStream stream,
//! with a window of publish acks in flight; the stage passes an event only
//! once the server acknowledged it.
//!
//! Every message carries `Nats-Msg-Id: <producer id>:<sequence>`, so a
//! resend after a lost ack or a reconnect is dropped by the server's
//! duplicate window. In ordered mode (the default) each message also
//! carries `Nats-Expected-Last-Msg-Id` naming the message before it: if a
//! message is lost with a dropped connection, the server refuses the ones
//! sent after it instead of storing them ahead of it, and the resend from
//! the lost one restores the order. Ordered mode needs this egress to be
//! the stream's only writer.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use ringbus::{Batch, FailurePolicy, Sequence, TryBatchEventHandler};

use crate::link::Link;
use ringbus::codec::Codec;

/// The subject of each event.
type SubjectFn<E> = Arc<dyn Fn(&E) -> String + Send + Sync>;

/// Options of an egress stage ([`Link::egress`]).
pub struct EgressOptions<E> {
    subject: SubjectFn<E>,
    producer_id: String,
    window: usize,
    ack_timeout: Duration,
    ordered: bool,
    policy: FailurePolicy<E>,
}

impl<E> Clone for EgressOptions<E> {
    fn clone(&self) -> Self {
        Self {
            subject: Arc::clone(&self.subject),
            producer_id: self.producer_id.clone(),
            window: self.window,
            ack_timeout: self.ack_timeout,
            ordered: self.ordered,
            policy: self.policy.clone(),
        }
    }
}

impl<E> fmt::Debug for EgressOptions<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressOptions")
            .field("producer_id", &self.producer_id)
            .field("window", &self.window)
            .field("ack_timeout", &self.ack_timeout)
            .field("ordered", &self.ordered)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<E> EgressOptions<E> {
    /// Every event to `subject`, under the producer identity `producer_id`
    /// (the first half of each `Nats-Msg-Id`; the second is the event's
    /// sequence on the bus). Give each run of a service its own identity
    /// (a start time, a pod name and restart count) unless it republishes
    /// the same events at the same bus sequences, or the server will drop
    /// its first events as duplicates of the last run's. A journal replay
    /// republishes them at the same sequences only when it replays the
    /// whole journal from its first record, from sequence 0: replayed from
    /// a later point (after `delete_before`, or from a snapshot), events
    /// take new bus sequences, so give that run a new identity (the events
    /// the last run sent are then stored again, not dropped).
    pub fn new(subject: impl Into<String>, producer_id: impl Into<String>) -> Self {
        let subject = subject.into();
        Self {
            subject: Arc::new(move |_| subject.clone()),
            producer_id: producer_id.into(),
            window: 256,
            ack_timeout: Duration::from_secs(2),
            ordered: true,
            // About 30 s of backoff (50 ms, doubling to 1 s) and as many ack
            // timeouts: at most about 90 s, inside the stream's default
            // duplicate window (2 min), so a resend is still recognised.
            policy: FailurePolicy::halt().retry(30, Duration::from_millis(50)),
        }
    }

    /// The subject of each event, chosen per event.
    pub fn subject_per_event(
        mut self,
        subject: impl Fn(&E) -> String + Send + Sync + 'static,
    ) -> Self {
        self.subject = Arc::new(subject);
        self
    }

    /// Publish acks in flight at most (256 by default): the egress sends up
    /// to this many messages of a batch before it waits for the oldest
    /// ack. Every ack of a batch is in before the stage passes it, so a
    /// bus that publishes one event at a time (batches of one) waits for
    /// each ack in turn: publish in batches for throughput.
    ///
    /// # Panics
    /// If `window` is 0.
    pub fn window(mut self, window: usize) -> Self {
        assert!(
            window > 0,
            "an egress window of 0 sends nothing; give it at least 1"
        );
        self.window = window;
        self
    }

    /// How long to wait for an ack before the send counts as failed (2 s
    /// by default); the stage's policy then retries from that event.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// With `false`, messages carry no `Nats-Expected-Last-Msg-Id`: for a
    /// stream other writers share, or subjects spread over several streams.
    /// A message lost with a dropped connection may then be stored after
    /// the ones sent behind it (nothing is lost or duplicated, as long as
    /// the resends stay inside the duplicate window: see
    /// [`on_failure`](Self::on_failure)).
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// The stage's failure policy: by default 30 retries from the first
    /// unacknowledged event (50 ms backoff doubling to 1 s, each with its
    /// ack timeout: about 90 s with the default 2 s timeout), then halt.
    /// Keep the retries inside the stream's duplicate window (2 min by
    /// default): a resend after it is stored a second time. Each retry
    /// resends the unacknowledged events behind the failing one, and the
    /// count starts again at the next failing event: without `ordered`,
    /// the retries of every failing event in one window of
    /// unacknowledged events add up, so keep their sum inside the window.
    /// Dead-lettering or skipping an event gives up that event only.
    pub fn on_failure(mut self, policy: FailurePolicy<E>) -> Self {
        self.policy = policy;
        self
    }
}

/// Why the egress could not hand an event to the stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum EgressError {
    /// The codec refused the event.
    Encode(ringbus::BoxError),
    /// The publish or its ack failed: timed out, the server is gone, or the
    /// server refused the message (the reason says which).
    Publish {
        /// The subject published to.
        subject: String,
        /// The client's error.
        reason: String,
    },
}

impl fmt::Display for EgressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encode(e) => write!(f, "cannot encode the event: {e}"),
            Self::Publish { subject, reason } => {
                write!(f, "publish to `{subject}` not acknowledged: {reason}")
            }
        }
    }
}

impl std::error::Error for EgressError {}

/// What an egress did, from any thread ([`Egress::stats`]).
#[derive(Debug, Default)]
pub struct EgressStats {
    acked: AtomicU64,
    duplicates: AtomicU64,
    resent: AtomicU64,
}

impl EgressStats {
    /// Messages the server acknowledged (duplicates included).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
    /// Acks that said the server had the message already (a resend).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    /// Messages sent again after a failure.
    pub fn resent(&self) -> u64 {
        self.resent.load(Ordering::Relaxed)
    }
}

/// The egress stage: add it with [`EgressExt::egress_to`].
pub struct Egress<E, C> {
    link: Link,
    context: async_nats::jetstream::Context,
    codec: C,
    options: EgressOptions<E>,
    /// The id of the last message the server acknowledged: what the next
    /// message expects before it (ordered mode).
    last_acked: Option<Sequence>,
    /// The highest sequence ever sent (to count resends).
    highest_sent: Option<Sequence>,
    /// The event of the last failure, and whether the stream's last message
    /// is unknown since (the event was given up, or the stream refused the
    /// chain after an acknowledged message): the next message then goes
    /// without `Nats-Expected-Last-Msg-Id`.
    failed_at: Option<Sequence>,
    chain_broken: bool,
    buffer: Vec<u8>,
    stats: Arc<EgressStats>,
}

impl<E, C> fmt::Debug for Egress<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("link", &self.link)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct InFlight {
    sequence: Sequence,
    /// The sequence whose message id its `Nats-Expected-Last-Msg-Id` named.
    expected: Option<Sequence>,
    subject: async_nats::Subject,
    ack: PublishAckFuture,
}

impl<E, C: Codec<E>> Egress<E, C> {
    pub(crate) fn new(link: Link, codec: C, options: EgressOptions<E>) -> Self {
        // The client's own limit on acks in flight stays above ours: acks of
        // a window given up after a failure still hold their permits until
        // they time out.
        // The context spawns its ack task on the link's runtime.
        let _runtime = link.handle().enter();
        let context = async_nats::jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            // The acks of a window given up after a failure give their
            // permits back after this too, not after the client's 30 s.
            .ack_timeout(options.ack_timeout)
            .max_ack_inflight(options.window * 4)
            .backpressure_on_inflight(true)
            .build(link.client().clone());
        Self {
            link,
            context,
            codec,
            options,
            last_acked: None,
            highest_sent: None,
            failed_at: None,
            chain_broken: false,
            buffer: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// Counters of this egress, readable from any thread.
    pub fn stats(&self) -> Arc<EgressStats> {
        Arc::clone(&self.stats)
    }

    /// The stage's failure policy (from [`EgressOptions::on_failure`]).
    pub fn policy(&self) -> FailurePolicy<E> {
        self.options.policy.clone()
    }

    async fn send_batch(&mut self, batch: Batch<'_, E>) -> Result<(), (Sequence, EgressError)> {
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(self.options.window);
        if self.failed_at.is_some_and(|at| batch.first_sequence() > at) {
            // The policy gave the failed event up: it may or may not be in
            // the stream.
            self.chain_broken = true;
        }
        self.failed_at = None;
        let mut previous = if self.chain_broken {
            None
        } else {
            self.last_acked
        };
        let result = self.send_window(batch, &mut in_flight, &mut previous).await;
        if let Err((at, _)) = &result {
            self.failed_at = Some(*at);
        }
        result
    }

    async fn send_window(
        &mut self,
        batch: Batch<'_, E>,
        in_flight: &mut VecDeque<InFlight>,
        previous: &mut Option<Sequence>,
    ) -> Result<(), (Sequence, EgressError)> {
        for (sequence, event) in batch.iter_with_sequence() {
            if in_flight.len() >= self.options.window {
                let oldest = in_flight.pop_front().expect("a full window");
                self.settle(oldest).await?;
            }
            let sent = self.send(sequence, event, *previous).await;
            match sent {
                Ok(next) => {
                    *previous = Some(sequence);
                    in_flight.push_back(next);
                }
                Err(error) => {
                    // The events before this one must be acknowledged first:
                    // the stage passes them when we report this one.
                    for earlier in in_flight.drain(..) {
                        self.settle(earlier).await?;
                    }
                    return Err((sequence, error));
                }
            }
        }
        while let Some(next) = in_flight.pop_front() {
            // An error drops the rest of the window: their acks are not
            // waited for, and the retry sends them again under the same ids.
            self.settle(next).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        sequence: Sequence,
        event: &E,
        previous: Option<Sequence>,
    ) -> Result<InFlight, EgressError> {
        self.buffer.clear();
        self.codec
            .encode(event, &mut self.buffer)
            .map_err(EgressError::Encode)?;
        let subject = async_nats::Subject::from((self.options.subject)(event));
        let id = format!("{}:{sequence}", self.options.producer_id);
        let mut message = PublishMessage::build()
            .payload(Bytes::copy_from_slice(&self.buffer))
            .message_id(id);
        let expected = previous.filter(|_| self.options.ordered);
        if let Some(previous) = expected {
            let previous = format!("{}:{previous}", self.options.producer_id);
            message = message.expected_last_message_id(previous);
        }
        if self.highest_sent.is_some_and(|h| sequence <= h) {
            self.stats.resent.fetch_add(1, Ordering::Relaxed);
        }
        self.highest_sent = Some(self.highest_sent.map_or(sequence, |h| h.max(sequence)));
        let ack = self
            .context
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| EgressError::Publish {
                subject: subject.to_string(),
                reason: e.to_string(),
            })?;
        Ok(InFlight {
            sequence,
            expected,
            subject,
            ack,
        })
    }

    async fn settle(&mut self, sent: InFlight) -> Result<(), (Sequence, EgressError)> {
        match sent.ack.await {
            Ok(ack) => {
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                self.last_acked = Some(sent.sequence);
                self.chain_broken = false;
                Ok(())
            }
            Err(e) => {
                if e.kind() == PublishErrorKind::WrongLastMessageId
                    && self.last_acked == sent.expected
                {
                    // Refused although the message it names was acked to
                    // us: the stream's last message is another (a writer
                    // we do not know of, or a resend beyond the duplicate
                    // window). Send the retry unchained.
                    self.chain_broken = true;
                }
                let reason = match e.kind() {
                    PublishErrorKind::WrongLastMessageId => format!(
                        "{e} (a message before it was lost and is sent again; if another \
                         writer shares the stream, use EgressOptions::ordered(false))"
                    ),
                    // "No responders": no stream takes the subject, or the
                    // server has no JetStream at all (the answer is the same).
                    PublishErrorKind::StreamNotFound => format!(
                        "{e}: no stream takes subject `{}`, or the server runs without \
                         JetStream (start it with -js; Link::ensure_stream names which)",
                        sent.subject
                    ),
                    _ => e.to_string(),
                };
                Err((
                    sent.sequence,
                    EgressError::Publish {
                        subject: sent.subject.to_string(),
                        reason,
                    },
                ))
            }
        }
    }
}

impl<E, C: Codec<E>> TryBatchEventHandler<E> for Egress<E, C> {
    type Error = EgressError;

    fn on_batch(&mut self, batch: Batch<'_, E>) -> Result<(), (Sequence, EgressError)> {
        let link = self.link.clone();
        link.block_on(self.send_batch(batch))
    }
}

/// Adds an egress stage to a bus under construction.
pub trait EgressExt<E>: Sized {
    /// Adds `egress` as a stage with the failure policy of its options. It
    /// is named as any stage is: by
    /// [`thread_name`](ringbus::Builder::thread_name) before it (the
    /// examples call it `nats-egress`), else `ringbus-stage-N`.
    fn egress_to<C: Codec<E>>(self, egress: Egress<E, C>) -> Self
    where
        E: 'static;
}

impl<E, S, W> EgressExt<E> for ringbus::Builder<E, S, W>
where
    E: Send + Sync + 'static,
    S: ringbus::Sequencer,
    W: ringbus::WaitStrategy,
{
    fn egress_to<C: Codec<E>>(self, egress: Egress<E, C>) -> Self
    where
        E: 'static,
    {
        self.on_failure(egress.policy())
            .try_handle_events_with(egress)
    }
}
