//! The work queue: tasks published by the coordinator, pulled by workers, acknowledged only when done.
//!
//! Two implementations with the same semantics, checked by one conformance suite
//! (`coordinator/tests/integration/conformance.rs`):
//! - [`JetStreamQueue`]: a NATS JetStream stream with work-queue retention and a durable pull consumer
//!   (explicit ack, `ack_wait`, `max_deliver`).
//! - [`MemoryQueue`]: the same rules in process, for `lathe master` and unit tests.
//!
//! The rules: a pulled message is redelivered when it is not acknowledged within `ack_wait` (an
//! in-progress ack restarts that clock) or at once (or after a delay) when it is handed back with a
//! nak; `term` drops it; after `max_deliver` deliveries it is not delivered again, and its payload is
//! reported on [`WorkQueue::exhausted`] (JetStream only publishes an advisory; nothing moves the
//! message by itself). A message published twice with the same id while the first is still held is
//! stored once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// The queue's delivery rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// A delivery not acknowledged (or marked in progress) within this time is redelivered.
    pub ack_wait: Duration,
    /// Deliveries a message gets at most.
    pub max_deliver: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 4,
        }
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// De-duplication id: publishing the same id again while the message is held stores it once.
    pub id: String,
    /// The payload (an encoded `lathe.v1.Task`).
    pub payload: Bytes,
    /// Headers (trace context).
    pub headers: Vec<(String, String)>,
}

/// What a worker does with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done: remove the message.
    Ack,
    /// Still working: restart the ack deadline.
    Progress,
    /// Hand it back: redeliver after the delay (at once with `None`).
    Nak(Option<Duration>),
    /// Never deliver it again.
    Term,
}

/// How one delivery is acknowledged; each queue implements it.
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// Sends `settlement` for this delivery.
    async fn settle(&self, settlement: Settlement) -> Result<()>;
}

/// One delivery of a message to a worker.
pub struct Delivery {
    /// The payload as published.
    pub payload: Bytes,
    /// The headers as published.
    pub headers: Vec<(String, String)>,
    /// Which delivery this is, counting from 1.
    pub delivery: u32,
    acknowledge: Box<dyn Acknowledge>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("payload_bytes", &self.payload.len())
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Done: the message is removed.
    pub async fn ack(self) -> Result<()> {
        self.acknowledge.settle(Settlement::Ack).await
    }

    /// Still working: the ack deadline starts again.
    pub async fn progress(&self) -> Result<()> {
        self.acknowledge.settle(Settlement::Progress).await
    }

    /// Hands the message back, to be redelivered after `delay` (at once with `None`).
    pub async fn nak(self, delay: Option<Duration>) -> Result<()> {
        self.acknowledge.settle(Settlement::Nak(delay)).await
    }

    /// Never delivers the message again.
    pub async fn term(self) -> Result<()> {
        self.acknowledge.settle(Settlement::Term).await
    }
}

/// A stream of payloads of messages that used up their deliveries.
pub type ExhaustedStream = futures::stream::BoxStream<'static, Bytes>;

/// A message the queue holds (waiting, delivered and not acknowledged yet, or past its deliveries
/// and not removed yet), as [`WorkQueue::held`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its place in the queue, increasing with each publication.
    pub sequence: u64,
    /// Its payload.
    pub payload: Bytes,
}

/// The work queue.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// The delivery rules.
    fn settings(&self) -> QueueSettings;
    /// Publishes a message; returns once the queue holds it.
    async fn publish(&self, message: QueueMessage) -> Result<()>;
    /// Pulls up to `max` deliveries, waiting up to `wait` for the first.
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;
    /// Messages waiting for delivery plus messages delivered and not yet acknowledged.
    async fn depth(&self) -> Result<u64>;
    /// Payloads of messages past `max_deliver`, as the queue notices them.
    async fn exhausted(&self) -> Result<ExhaustedStream>;
    /// Up to `limit` messages the queue holds, in publication order, after the sequence `after`
    /// (from the first without it). The coordinator only publishes as many tasks as workers can
    /// take, so the queue holds few.
    async fn held(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredMessage>>;
    /// Removes a held message (one past its deliveries); false when it was not there.
    async fn remove(&self, sequence: u64) -> Result<bool>;
}

// ---------------------------------------------------------------------------------------------------
// In process.

#[derive(Debug)]
struct HeldMessage {
    id: String,
    payload: Bytes,
    headers: Vec<(String, String)>,
    delivered: u32,
    /// When it may be delivered (waiting) or is redelivered (in flight).
    due: Instant,
    in_flight: bool,
}

#[derive(Debug, Default)]
struct MemoryState {
    next_sequence: u64,
    messages: BTreeMap<u64, HeldMessage>,
    exhausted_senders: Vec<mpsc::UnboundedSender<Bytes>>,
}

impl MemoryState {
    /// Returns expired in-flight messages to the waiting set, or drops them past `max_deliver`.
    fn expire(&mut self, now: Instant, max_deliver: u32) {
        let expired: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| m.in_flight && m.due <= now)
            .map(|(&sequence, _)| sequence)
            .collect();
        for sequence in expired {
            self.release(sequence, now, max_deliver);
        }
    }

    /// A delivery ended without an ack: wait for redelivery at `due`, or drop past `max_deliver`.
    fn release(&mut self, sequence: u64, due: Instant, max_deliver: u32) {
        let Some(message) = self.messages.get_mut(&sequence) else {
            return;
        };
        if message.delivered >= max_deliver {
            if let Some(message) = self.messages.remove(&sequence) {
                self.exhausted_senders
                    .retain(|sender| sender.send(message.payload.clone()).is_ok());
            }
        } else {
            message.in_flight = false;
            message.due = due;
        }
    }
}

/// The in-process work queue.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    shared: Arc<MemoryShared>,
}

#[derive(Debug)]
struct MemoryShared {
    settings: QueueSettings,
    state: Mutex<MemoryState>,
    changed: Notify,
}

impl MemoryShared {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryState>> {
        self.state
            .lock()
            .map_err(|_| Error::Queue("in-process queue lock poisoned".to_owned()))
    }
}

impl MemoryQueue {
    /// An empty queue with these rules.
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            shared: Arc::new(MemoryShared {
                settings,
                state: Mutex::new(MemoryState::default()),
                changed: Notify::new(),
            }),
        }
    }
}

struct MemoryAck {
    shared: Arc<MemoryShared>,
    sequence: u64,
    delivery: u32,
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn settle(&self, settlement: Settlement) -> Result<()> {
        let settings = self.shared.settings;
        let mut state = self.shared.lock()?;
        let now = Instant::now();
        let current = state
            .messages
            .get(&self.sequence)
            .is_some_and(|m| m.in_flight && m.delivered == self.delivery);
        if !current {
            // A late settlement of an earlier delivery: that delivery is over already.
            return Ok(());
        }
        match settlement {
            Settlement::Ack | Settlement::Term => {
                state.messages.remove(&self.sequence);
            }
            Settlement::Progress => {
                if let Some(message) = state.messages.get_mut(&self.sequence) {
                    message.due = now + settings.ack_wait;
                }
            }
            Settlement::Nak(delay) => {
                state.release(
                    self.sequence,
                    now + delay.unwrap_or_default(),
                    settings.max_deliver,
                );
            }
        }
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    fn settings(&self) -> QueueSettings {
        self.shared.settings
    }

    async fn publish(&self, message: QueueMessage) -> Result<()> {
        {
            let mut state = self.shared.lock()?;
            if state.messages.values().any(|m| m.id == message.id) {
                return Ok(());
            }
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            state.messages.insert(
                sequence,
                HeldMessage {
                    id: message.id,
                    payload: message.payload,
                    headers: message.headers,
                    delivered: 0,
                    due: Instant::now(),
                    in_flight: false,
                },
            );
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let settings = self.shared.settings;
        let deadline = Instant::now() + wait;
        loop {
            let changed = self.shared.changed.notified();
            let next_due = {
                let mut state = self.shared.lock()?;
                let now = Instant::now();
                state.expire(now, settings.max_deliver);
                let mut deliveries = Vec::new();
                for (&sequence, message) in state.messages.iter_mut() {
                    if deliveries.len() == max {
                        break;
                    }
                    if message.in_flight || message.due > now {
                        continue;
                    }
                    message.delivered += 1;
                    message.in_flight = true;
                    message.due = now + settings.ack_wait;
                    deliveries.push(Delivery {
                        payload: message.payload.clone(),
                        headers: message.headers.clone(),
                        delivery: message.delivered,
                        acknowledge: Box::new(MemoryAck {
                            shared: Arc::clone(&self.shared),
                            sequence,
                            delivery: message.delivered,
                        }),
                    });
                }
                if !deliveries.is_empty() {
                    return Ok(deliveries);
                }
                state.messages.values().map(|m| m.due).min()
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_due.map_or(deadline, |due| due.clamp(now, deadline));
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn depth(&self) -> Result<u64> {
        let mut state = self.shared.lock()?;
        state.expire(Instant::now(), self.shared.settings.max_deliver);
        Ok(state.messages.len() as u64)
    }

    async fn exhausted(&self) -> Result<ExhaustedStream> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.lock()?.exhausted_senders.push(sender);
        Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(receiver).boxed())
    }

    async fn held(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredMessage>> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .shared
            .lock()?
            .messages
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(&sequence, message)| StoredMessage {
                sequence,
                payload: message.payload.clone(),
            })
            .collect())
    }

    async fn remove(&self, sequence: u64) -> Result<bool> {
        Ok(self.shared.lock()?.messages.remove(&sequence).is_some())
    }
}

// ---------------------------------------------------------------------------------------------------
// NATS JetStream.

/// The stream that holds tasks.
pub const STREAM_NAME: &str = "LATHE_TASKS";
/// The subject tasks are published on.
pub const TASK_SUBJECT: &str = "lathe.tasks";
/// The durable pull consumer every worker pulls from (KEDA scales workers on its pending count).
pub const CONSUMER_NAME: &str = "lathe-workers";

/// The work queue on NATS JetStream.
#[derive(Clone)]
pub struct JetStreamQueue {
    client: async_nats::Client,
    context: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
    consumer:
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    settings: QueueSettings,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn queue_error(context: &str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> Error + '_ {
    move |error| Error::Queue(format!("{context}: {error}"))
}

impl JetStreamQueue {
    /// Connects to NATS at `url` in plaintext without credentials and creates (or opens) the task
    /// stream and the workers' consumer.
    pub async fn connect(url: &str, settings: QueueSettings) -> Result<Self> {
        Self::connect_with(url, settings, &crate::store_access::NatsAccess::default()).await
    }

    /// Connects to NATS at `url` with `access`'s TLS and user, and creates (or opens) the task
    /// stream and the workers' consumer.
    ///
    /// A user that may only pull and acknowledge (the workers': `deploy/README.md` lists its
    /// permissions) opens them: it may read their information, and the coordinator creates them.
    /// Until the coordinator has, this fails (the server drops the creation and the request times
    /// out), and [`crate::service::patiently`] tries again.
    ///
    /// # Errors
    /// NATS out of reach, TLS or credentials refused, or the stream and consumer neither there nor
    /// creatable.
    pub async fn connect_with(
        url: &str,
        settings: QueueSettings,
        access: &crate::store_access::NatsAccess,
    ) -> Result<Self> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(credentials) = &access.credentials {
            options = options
                .user_and_password(credentials.user.clone(), credentials.password().to_owned());
        }
        if access.tls.enabled() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &access.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some(identity) = &access.tls.identity {
            options = options.add_client_certificate(identity.cert.clone(), identity.key.clone());
        }
        let client = options
            .connect(url)
            .await
            .map_err(|e| Error::Queue(format!("cannot connect to NATS at {url}: {e}")))?;
        let context = async_nats::jetstream::new(client.clone());
        let (stream, consumer) = Self::create(&context, settings).await?;
        Ok(Self {
            client,
            context,
            stream,
            consumer,
            settings,
        })
    }

    /// Creates the task stream and the workers' consumer, or opens them if they exist.
    async fn create(
        context: &async_nats::jetstream::Context,
        settings: QueueSettings,
    ) -> Result<(
        async_nats::jetstream::stream::Stream,
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    )> {
        use async_nats::jetstream::{consumer, stream};
        let stream = context
            .get_or_create_stream(stream::Config {
                name: STREAM_NAME.to_owned(),
                subjects: vec![TASK_SUBJECT.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| queue_error("cannot create the task stream")(Box::new(e)))?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER_NAME,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER_NAME.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_wait,
                    max_deliver: i64::from(settings.max_deliver),
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| queue_error("cannot create the workers' consumer")(Box::new(e)))?;
        Ok((stream, consumer))
    }

    /// Creates the stream and the consumer again if they are gone (a NATS server that restarted
    /// without its data): the handles refer to them by name, so they work again at once.
    async fn recreate(&self) {
        match Self::create(&self.context, self.settings).await {
            Ok(_) => tracing::info!("task stream and consumer checked (created again if lost)"),
            Err(error) => tracing::warn!(%error, "cannot create the task stream again"),
        }
    }

    async fn publish_once(&self, message: &QueueMessage) -> Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.id.as_str());
        for (name, value) in &message.headers {
            headers.insert(name.as_str(), value.as_str());
        }
        self.context
            .publish_with_headers(TASK_SUBJECT, headers, message.payload.clone())
            .await
            .map_err(|e| queue_error("publish")(Box::new(e)))?
            .await
            .map_err(|e| queue_error("publish acknowledgement")(Box::new(e)))?;
        Ok(())
    }

    async fn pull_once(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        // Wait for the first message only, then take what else is there without waiting: a batch
        // that waited for `max` messages could outlast the ack deadline of the first.
        let first = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| queue_error("pull")(Box::new(e)))?;
        let mut deliveries = Vec::new();
        collect_deliveries(first, 1, &mut deliveries).await?;
        if deliveries.len() == 1 && max > 1 {
            let more = self
                .consumer
                .fetch()
                .max_messages(max - 1)
                .messages()
                .await
                .map_err(|e| queue_error("pull")(Box::new(e)))?;
            collect_deliveries(more, max, &mut deliveries).await?;
        }
        Ok(deliveries)
    }
}

struct JetStreamAck(async_nats::jetstream::message::Acker);

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn settle(&self, settlement: Settlement) -> Result<()> {
        use async_nats::jetstream::AckKind;
        let kind = match settlement {
            Settlement::Ack => AckKind::Ack,
            Settlement::Progress => AckKind::Progress,
            Settlement::Nak(delay) => AckKind::Nak(delay),
            Settlement::Term => AckKind::Term,
        };
        if settlement == Settlement::Ack {
            // Wait for the server's confirmation, so that what follows sees the message gone.
            self.0
                .double_ack_with(kind)
                .await
                .map_err(queue_error("ack"))
        } else {
            self.0.ack_with(kind).await.map_err(queue_error("ack"))
        }
    }
}

/// Turns pulled JetStream messages into deliveries, up to `max` in all.
async fn collect_deliveries<S>(
    mut messages: S,
    max: usize,
    deliveries: &mut Vec<Delivery>,
) -> Result<()>
where
    S: futures::Stream<
            Item = Result<async_nats::jetstream::Message, Box<dyn std::error::Error + Send + Sync>>,
        > + Unpin,
{
    while deliveries.len() < max {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.map_err(queue_error("pull"))?;
        let delivery = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .map_err(queue_error("delivery info"))?;
        let (message, acker) = message.split();
        let headers = message
            .headers
            .iter()
            .flat_map(|headers| headers.iter())
            .filter(|(name, _)| AsRef::<str>::as_ref(*name) != "Nats-Msg-Id")
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |value| (name.to_string(), value.to_string()))
            })
            .collect();
        deliveries.push(Delivery {
            payload: message.payload,
            headers,
            delivery,
            acknowledge: Box::new(JetStreamAck(acker)),
        });
    }
    Ok(())
}

#[async_trait]
impl WorkQueue for JetStreamQueue {
    fn settings(&self) -> QueueSettings {
        self.settings
    }

    async fn publish(&self, message: QueueMessage) -> Result<()> {
        match self.publish_once(&message).await {
            Ok(()) => Ok(()),
            Err(error) => {
                // The stream may be gone (a server that lost its data): create it, then try once
                // more.
                tracing::warn!(%error, "publish failed; checking the task stream");
                self.recreate().await;
                self.publish_once(&message).await
            }
        }
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let pulled = self.pull_once(max, wait).await;
        if pulled.is_err() {
            self.recreate().await;
        }
        pulled
    }

    async fn depth(&self) -> Result<u64> {
        let mut consumer = self.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| queue_error("consumer info")(Box::new(e)))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn exhausted(&self) -> Result<ExhaustedStream> {
        let subject =
            format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM_NAME}.{CONSUMER_NAME}");
        let advisories = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| queue_error("advisory subscription")(Box::new(e)))?;
        let stream = self.stream.clone();
        Ok(advisories
            .filter_map(move |advisory| {
                let stream = stream.clone();
                async move {
                    let sequence = serde_json::from_slice::<serde_json::Value>(&advisory.payload)
                        .ok()?
                        .get("stream_seq")?
                        .as_u64()?;
                    let message = stream.get_raw_message(sequence).await.ok()?;
                    // The server keeps a message past max_deliver in a work-queue stream: drop it.
                    let _ = stream.delete_message(sequence).await;
                    Some(message.payload)
                }
            })
            .boxed())
    }

    async fn held(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredMessage>> {
        let mut held = Vec::new();
        let mut next = after.map_or(1, |after| after + 1);
        while held.len() < limit {
            // The first message at or after `next`: gaps (acknowledged messages) cost nothing.
            let message = match self
                .stream
                .get_first_raw_message_by_subject(TASK_SUBJECT, next)
                .await
            {
                Ok(message) => message,
                Err(error)
                    if error.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    break;
                }
                Err(error) => return Err(queue_error("read the task stream")(Box::new(error))),
            };
            next = message.sequence + 1;
            held.push(StoredMessage {
                sequence: message.sequence,
                payload: message.payload,
            });
        }
        Ok(held)
    }

    async fn remove(&self, sequence: u64) -> Result<bool> {
        match self.stream.delete_message(sequence).await {
            Ok(removed) => Ok(removed),
            Err(error)
                if matches!(
                    error.kind(),
                    async_nats::jetstream::stream::DeleteMessageErrorKind::JetStream(ref code)
                        if code.error_code() == async_nats::jetstream::ErrorCode::SEQUENCE_NOT_FOUND
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(queue_error("remove a message")(Box::new(error))),
        }
    }
}

/// Work-queue pending counts are what the KEDA scaler reads; the coordinator reads them too.
pub type SharedQueue = Arc<dyn WorkQueue>;
