//! One connection to a NATS server (or cluster), shared by the egress
//! stages and ingresses built from it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::ConnectErrorKind;
use tokio::runtime::{Handle, Runtime};

use crate::egress::{Egress, EgressOptions};
use crate::ingress::{Ingress, IngressOptions};
use ringbus::codec::Codec;

/// The longest a blocking JetStream request of the link (a stream's or a
/// durable's lookup or creation) waits for its answer.
/// (Longer than the client's own chain: a lookup, a create and the
/// follow-up question take up to about 17 s against a slow server.)
pub(crate) const REQUEST_WAIT: Duration = Duration::from_secs(20);

/// How a [`Link`] authenticates.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A user and password (`authorization { user, password }`).
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token (`authorization { token }`).
    Token(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?} }}"),
            Self::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// Options of [`Link::connect`].
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Credentials; none by default.
    pub auth: Auth,
    /// The client name the server shows (`connz`); `ringbus` by default.
    pub name: String,
    /// How long the first connection may take; 5 s by default. Later
    /// reconnections go on for as long as the link lives.
    pub connect_timeout: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            auth: Auth::None,
            name: "ringbus".into(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a link could not be made or used.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkError {
    /// The server refused or could not be reached; names the server.
    Connect {
        /// The server addresses given.
        servers: String,
        /// What went wrong, with the fix where there is one.
        reason: String,
    },
    /// A JetStream request (stream or consumer lookup, creation) failed.
    JetStream(String),
    /// The server does not run JetStream (started without `-js` and
    /// without a `jetstream` block), or not for this account.
    JetStreamNotEnabled {
        /// The server addresses given.
        servers: String,
        /// True when the server runs JetStream but not for this account.
        account: bool,
    },
    /// The link's own runtime could not start.
    Runtime(std::io::Error),
    /// The ingress's durable consumer exists with a configuration the
    /// ingress cannot go by: an ack policy other than `Explicit`, a filter
    /// other than the options', headers only, or the deliver policy
    /// `LastPerSubject`. (Its `max_batch` and
    /// `max_expires` are kept: the ingress's fetches ask for no more.) An
    /// existing durable keeps its configuration; delete it or change the
    /// options.
    ConsumerMismatch {
        /// The stream.
        stream: String,
        /// The durable consumer.
        durable: String,
        /// What the existing consumer has.
        existing: String,
        /// What the ingress options ask for.
        wanted: String,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { servers, reason } => {
                write!(f, "cannot connect to NATS at {servers}: {reason}")
            }
            Self::JetStream(reason) => write!(f, "JetStream request failed: {reason}"),
            Self::JetStreamNotEnabled {
                servers,
                account: false,
            } => write!(
                f,
                "JetStream is not enabled on the server at {servers}; start nats-server \
                 with -js (or give its config a `jetstream {{}}` block)"
            ),
            Self::JetStreamNotEnabled {
                servers,
                account: true,
            } => write!(
                f,
                "JetStream is not enabled for this account on the server at {servers}; \
                 enable it in the account's config (`jetstream: enabled`)"
            ),
            Self::Runtime(e) => write!(f, "cannot start the NATS link's runtime: {e}"),
            Self::ConsumerMismatch {
                stream,
                durable,
                existing,
                wanted,
            } => write!(
                f,
                "the durable consumer `{durable}` of stream `{stream}` exists with {existing}, \
                 but the ingress options ask for {wanted}; delete the consumer (it keeps its \
                 configuration) or change the options"
            ),
        }
    }
}

impl std::error::Error for LinkError {}

struct Inner {
    client: async_nats::Client,
    servers: String,
    handle: Handle,
    /// Our own runtime, when the caller did not hand us one.
    runtime: Option<Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // The last link may be dropped inside an async context (an
            // ingress task); a runtime cannot be dropped in one.
            runtime.shutdown_background();
        }
    }
}

/// A connection to NATS (one server or a cluster's seed list) and the
/// runtime its client tasks run on. Clone it freely; build egress stages
/// ([`Link::egress`]) and ingresses ([`Link::ingress`]) from it.
///
/// The client reconnects on its own after a server dies or a connection
/// drops, for as long as the link lives; the egress resends what was not
/// acknowledged and the ingress fetches again.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("servers", &self.inner.servers)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Connects to `servers` (`nats://host:port`, comma-separated for a
    /// cluster) on a runtime of the link's own (one worker thread, named
    /// `ringbus-nats`). Call it outside an async context; inside one, use
    /// [`connect_async`](Link::connect_async).
    ///
    /// # Errors
    /// [`LinkError::Connect`] naming the server when it cannot be reached
    /// in `connect_timeout` or refuses the credentials.
    pub fn connect(servers: &str, options: LinkOptions) -> Result<Self, LinkError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ringbus-nats")
            .enable_all()
            .build()
            .map_err(LinkError::Runtime)?;
        let client = runtime.block_on(connect_client(servers, &options))?;
        Ok(Self::with(
            client,
            servers,
            runtime.handle().clone(),
            Some(runtime),
        ))
    }

    /// Connects on the current tokio runtime (which must have the time and
    /// IO drivers, and must not be a current-thread runtime if a stage or
    /// ingress thread is to wait on it while the caller's task sleeps).
    ///
    /// # Errors
    /// As [`connect`](Link::connect).
    pub async fn connect_async(servers: &str, options: LinkOptions) -> Result<Self, LinkError> {
        let client = connect_client(servers, &options).await?;
        Ok(Self::with(client, servers, Handle::current(), None))
    }

    fn with(
        client: async_nats::Client,
        servers: &str,
        handle: Handle,
        runtime: Option<Runtime>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                servers: servers.to_owned(),
                handle,
                runtime,
            }),
        }
    }

    /// The NATS client, for anything the bridge does not do.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The runtime the link's client runs on.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// A JetStream context on this link.
    pub fn jetstream(&self) -> jetstream::Context {
        // A context spawns its ack task on the link's runtime.
        let _runtime = self.inner.handle.enter();
        jetstream::new(self.inner.client.clone())
    }

    /// Runs `future` on the link's runtime from a thread outside any async
    /// context (a stage thread, the ingress thread, `main`).
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.inner.handle.block_on(future)
    }

    /// Runs a JetStream request (`what`) to its answer, for at most
    /// [`REQUEST_WAIT`]: while the server is down the client's requests
    /// may wait for its reconnection for ever, and no call of ours may.
    pub(crate) fn block_on_request<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, LinkError>>,
    ) -> Result<T, LinkError> {
        self.block_on(async {
            tokio::time::timeout(REQUEST_WAIT, request)
                .await
                .unwrap_or_else(|_| {
                    Err(LinkError::JetStream(format!(
                        "{what}: no answer in {REQUEST_WAIT:?} (the server down, unreachable \
                         or overloaded); try again once it answers (a creation may have \
                         happened meanwhile: the next try finds it)"
                    )))
                })
        })
    }

    /// Creates the stream `config` names unless it exists (the existing
    /// one is kept as it is). A convenience for examples and tests; a
    /// service usually leaves streams to its operators. Blocks: call it
    /// outside an async context (`tokio::task::spawn_blocking` inside one).
    ///
    /// # Errors
    /// [`LinkError::JetStream`] with the server's answer, or when none came
    /// within 20 s (the server down);
    /// [`LinkError::JetStreamNotEnabled`] when the server does not run
    /// JetStream.
    pub fn ensure_stream(&self, config: stream::Config) -> Result<(), LinkError> {
        let js = self.jetstream();
        let what = format!("creating or looking up stream {:?}", config.name);
        self.block_on_request(&what, async {
            match js.get_or_create_stream(config).await {
                Ok(_) => Ok(()),
                Err(e) => Err(jetstream_failure(self, e.to_string()).await),
            }
        })
    }

    /// An egress stage that publishes each event of a bus to JetStream
    /// with `codec` and `options`; add it with
    /// [`EgressExt::egress_to`](crate::EgressExt::egress_to).
    pub fn egress<E, C: Codec<E>>(&self, codec: C, options: EgressOptions<E>) -> Egress<E, C> {
        Egress::new(self.clone(), codec, options)
    }

    /// Starts an ingress that fetches from a durable pull consumer and
    /// publishes into `producer`'s bus; see [`Ingress`]. Blocks while it
    /// looks the consumer up: call it outside an async context
    /// (`tokio::task::spawn_blocking` inside one).
    ///
    /// # Errors
    /// [`LinkError::JetStream`] when the stream is missing, the consumer
    /// cannot be created, or no answer came within 20 s (the server down);
    /// [`LinkError::JetStreamNotEnabled`] when the
    /// server does not run JetStream; [`LinkError::ConsumerMismatch`] when
    /// the durable exists with an ack policy other than `Explicit`, another
    /// filter, or headers only.
    pub fn ingress<E, C, P>(
        &self,
        codec: C,
        options: IngressOptions,
        producer: P,
    ) -> Result<Ingress<P>, LinkError>
    where
        E: Send + 'static,
        C: Codec<E>,
        P: ringbus::Publisher<E> + Send + 'static,
    {
        Ingress::start(self.clone(), codec, options, producer)
    }
}

/// The error of a failed JetStream request on `link` (`reason` says what
/// failed). A server without JetStream answers a stream lookup with "no
/// responders", which the client reports as a missing resource: ask the
/// server about the account, and name the real cause.
pub(crate) async fn jetstream_failure(link: &Link, reason: String) -> LinkError {
    use async_nats::jetstream::context::AccountErrorKind;
    use async_nats::jetstream::ErrorCode;
    let js = link.jetstream();
    let asked = tokio::time::timeout(Duration::from_secs(2), js.query_account());
    let account = match asked.await {
        Ok(Err(e)) => match e.kind() {
            // No JetStream API on the server at all.
            AccountErrorKind::JetStreamUnavailable => Some(false),
            AccountErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED =>
            {
                Some(false)
            }
            AccountErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT =>
            {
                Some(true)
            }
            _ => None,
        },
        _ => None,
    };
    match account {
        Some(account) => LinkError::JetStreamNotEnabled {
            servers: link.inner.servers.clone(),
            account,
        },
        None => LinkError::JetStream(reason),
    }
}

async fn connect_client(
    servers: &str,
    options: &LinkOptions,
) -> Result<async_nats::Client, LinkError> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(&options.name)
        .connection_timeout(options.connect_timeout)
        // After the first connection: reconnect for as long as the link lives.
        .max_reconnects(None);
    match &options.auth {
        Auth::None => {}
        Auth::UserPassword { user, password } => {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        Auth::Token(token) => connect = connect.token(token.clone()),
    }
    let failed = |reason: String| LinkError::Connect {
        servers: servers.to_owned(),
        reason,
    };
    let addresses = servers
        .split(',')
        .map(|s| s.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            failed(format!(
                "{e}; give `nats://host:port`, comma-separated for a cluster"
            ))
        })?;
    let connecting = connect.connect(addresses.as_slice());
    let client = tokio::time::timeout(options.connect_timeout + Duration::from_secs(1), connecting)
        .await
        .map_err(|_| failed(format!("no answer in {:?}", options.connect_timeout)))?
        .map_err(|e| {
            failed(match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    format!(
                        "{e}: the server refused the credentials; set LinkOptions::auth \
                         to the server's user and password or token"
                    )
                }
                _ => e.to_string(),
            })
        })?;
    Ok(client)
}
