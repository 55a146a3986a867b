//! RabbitMQ adapter (lapin; `amqp://` or `amqps://` through rustls). One connection,
//! reopened after a failure; one confirm-mode channel for publishing.

use super::{Acker, BusError, Delivery, OutgoingMessage, Topology};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

struct Inner {
    uri: String,
    extra_ca_pem: Option<String>,
    timeout: Duration,
    live: Mutex<Live>,
}

/// The live connection and its publishing channel, or when dialling last failed.
#[derive(Default)]
struct Live {
    current: Option<(Connection, Channel)>,
    failed_at: Option<std::time::Instant>,
}

/// After a failed dial, callers fail at once for this long instead of each waiting out
/// its own connection timeout behind the lock.
const FAIL_FAST: Duration = Duration::from_secs(1);

impl RabbitBus {
    /// Nothing is dialled here: the first publish or declare connects, so a cold start
    /// with the broker down still serves requests (events wait in the outbox).
    pub fn new(uri: &str, extra_ca_pem: Option<&str>, timeout: Duration) -> Self {
        RabbitBus {
            inner: Arc::new(Inner {
                uri: uri.to_string(),
                extra_ca_pem: extra_ca_pem.map(str::to_string),
                timeout,
                live: Mutex::new(Live::default()),
            }),
        }
    }

    async fn connect(&self) -> Result<Connection, BusError> {
        let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: self.inner.extra_ca_pem.clone() };
        let properties = ConnectionProperties::default().with_connection_name("settle".into());
        let builder = lapin::DefaultConnectionBuilder::new()
            .map_err(classify)?
            .with_uri_str(self.inner.uri.clone())
            .with_properties(properties)
            .with_tls_config(tls);
        match tokio::time::timeout(self.inner.timeout, builder.connect()).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(BusError::Unavailable(format!("no answer within {:?}", self.inner.timeout))),
        }
    }

    /// The publishing channel, (re)connecting if there is none or it died.
    async fn channel(&self) -> Result<Channel, BusError> {
        let mut live = self.inner.live.lock().await;
        if let Some((conn, channel)) = live.current.as_ref() {
            if conn.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        live.current = None;
        if live.failed_at.is_some_and(|t| t.elapsed() < FAIL_FAST) {
            return Err(BusError::Unavailable("broker unreachable (last attempt failed just now)".into()));
        }
        let open = async {
            let conn = self.connect().await?;
            let channel = conn.create_channel().await.map_err(classify)?;
            // Publisher confirms: a publish only counts once the broker has taken
            // responsibility for the message (persisted it to disk for durable queues).
            channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(classify)?;
            Ok((conn, channel))
        };
        let opened = match tokio::time::timeout(self.inner.timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!("no channel within {:?}", self.inner.timeout))),
        };
        match opened {
            Ok((conn, channel)) => {
                live.current = Some((conn, channel.clone()));
                live.failed_at = None;
                Ok(channel)
            }
            Err(e) => {
                live.failed_at = Some(std::time::Instant::now());
                Err(e)
            }
        }
    }

    /// Forgets `failed` after an error so that the next call dials again, unless another
    /// caller has already replaced it with a fresh channel.
    async fn reset(&self, failed: &Channel) {
        let mut live = self.inner.live.lock().await;
        if live.current.as_ref().is_some_and(|(_, ch)| ch.id() == failed.id()) {
            live.current = None;
        }
    }

    pub(super) async fn declare(&self, t: &Topology) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let result = match tokio::time::timeout(self.inner.timeout, self.declare_on(&channel, t)).await {
            Ok(r) => r,
            Err(_) => Err(BusError::Unavailable(format!("declare took longer than {:?}", self.inner.timeout))),
        };
        if result.is_err() {
            self.reset(&channel).await;
        }
        result
    }

    pub(super) async fn declare_tap(&self, exchange: &str, queue: &str, idle: Duration) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let declare = async {
            let mut args = FieldTable::default();
            // The broker deletes the tap once nobody has used it for `idle`.
            let ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
            // Durable, so that a broker restart does not cut the observer's copy short.
            let durable = QueueDeclareOptions { durable: true, ..Default::default() };
            channel.queue_declare(queue.into(), durable, args).await.map_err(classify)?;
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(classify)
        };
        let result = match tokio::time::timeout(self.inner.timeout, declare).await {
            Ok(r) => r,
            Err(_) => Err(BusError::Unavailable(format!("declare took longer than {:?}", self.inner.timeout))),
        };
        if result.is_err() {
            self.reset(&channel).await;
        }
        result
    }

    async fn declare_on(&self, ch: &Channel, t: &Topology) -> Result<(), BusError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(t.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(classify)?;
        ch.exchange_declare(
            t.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(classify)?;
        let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(t.dead_letter_queue.as_str().into(), durable_queue, FieldTable::default())
            .await
            .map_err(classify)?;
        ch.queue_bind(
            t.dead_letter_queue.as_str().into(),
            t.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(classify)?;
        let mut args = FieldTable::default();
        // Rejected (or expired) messages go to the dead-letter exchange instead of vanishing.
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(t.dead_letter_exchange.as_str().into()));
        ch.queue_declare(t.queue.as_str().into(), durable_queue, args).await.map_err(classify)?;
        ch.queue_bind(
            t.queue.as_str().into(),
            t.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn publish(&self, exchange: &str, m: &OutgoingMessage) -> Result<(), BusError> {
        let channel = self.channel().await?;
        let mut headers = FieldTable::default();
        for (k, v) in &m.headers {
            headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
        }
        let properties = BasicProperties::default()
            // 2 = persistent: the message survives a broker restart in a durable queue.
            .with_delivery_mode(2)
            .with_message_id(m.message_id.as_str().into())
            .with_content_type(m.content_type.as_str().into())
            .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0))
            .with_headers(headers);
        let publish = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    m.routing_key.as_str().into(),
                    // Mandatory: a message no queue takes comes back (basic.return before the
                    // ack) instead of being acked and dropped, so an unroutable event is a
                    // failed publish that stays in the outbox.
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &m.body,
                    properties,
                )
                .await
                .map_err(classify)?;
            match confirm.await.map_err(classify)? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_returned)) => Err(BusError::Unroutable(m.routing_key.clone())),
                Confirmation::Nack(_) => Err(BusError::Nacked),
                Confirmation::NotRequested => Err(BusError::Other("channel is not in confirm mode".into())),
            }
        };
        let result = match tokio::time::timeout(self.inner.timeout, publish).await {
            Ok(r) => r,
            Err(_) => Err(BusError::Unavailable(format!("no confirm within {:?}", self.inner.timeout))),
        };
        if matches!(result, Err(BusError::Unavailable(_) | BusError::Other(_))) {
            self.reset(&channel).await;
        }
        result
    }

    pub(super) async fn subscribe(&self, queue: &str, prefetch: u16) -> Result<RabbitSubscription, BusError> {
        let open = async {
            // Consumers get their own connection: a slow consumer must never hold up publishing.
            let conn = self.connect().await?;
            let channel = conn.create_channel().await.map_err(classify)?;
            channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(classify)?;
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    "settle-local".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(classify)?;
            Ok(RabbitSubscription { consumer, conn, channel, queue: queue.to_string(), timeout: self.inner.timeout })
        };
        match tokio::time::timeout(self.inner.timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!("no consumer within {:?}", self.inner.timeout))),
        }
    }

    pub(super) async fn ping(&self) -> Result<(), BusError> {
        self.channel().await.map(|_| ())
    }
}

pub struct RabbitSubscription {
    consumer: lapin::Consumer,
    conn: Connection,
    channel: Channel,
    queue: String,
    /// Bounds the idle check's round trip to the broker.
    timeout: Duration,
}

/// How often an idle subscription checks that its connection is still open.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

impl RabbitSubscription {
    /// Whether the connection and channel are open and the broker answers a passive
    /// declare of the queue on this channel within the timeout.
    async fn broker_answers(&self) -> bool {
        if !(self.conn.status().connected() && self.channel.status().connected()) {
            return false;
        }
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let asked = self.channel.queue_declare(self.queue.as_str().into(), passive, FieldTable::default());
        matches!(tokio::time::timeout(self.timeout, asked).await, Ok(Ok(_)))
    }

    pub(super) async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        let next = loop {
            // A broker that stops (`rabbitmqctl stop_app`) closes the connection, but the
            // consumer stream has been seen to stay open, silent, with the server-side
            // consumer gone, and the client's status still saying connected (a fault test
            // found a tap with no consumer after a restart): an idle subscription asks the
            // broker about its queue, and ends with an error unless the answer comes back,
            // so that its owner subscribes again.
            match tokio::time::timeout(LIVENESS_CHECK, self.consumer.next()).await {
                Ok(next) => break next?,
                Err(_) if self.broker_answers().await => continue,
                Err(_) => return Some(Err(BusError::Unavailable("the broker closed the connection".into()))),
            }
        };
        let d = match next {
            Ok(d) => d,
            Err(e) => return Some(Err(classify(e))),
        };
        let p = &d.properties;
        let headers: BTreeMap<String, String> = p
            .headers()
            .as_ref()
            .map(|h| h.inner().iter().filter_map(|(k, v)| Some((k.to_string(), header_text(v)?))).collect())
            .unwrap_or_default();
        Some(Ok(Delivery {
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            message_id: p.message_id().as_ref().map(ShortString::to_string),
            content_type: p.content_type().as_ref().map(ShortString::to_string),
            delivery_mode: *p.delivery_mode(),
            timestamp: *p.timestamp(),
            headers,
            redelivered: d.redelivered,
            body: d.data,
            acker: Acker::RabbitMq(d.acker),
        }))
    }
}

fn header_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

pub(super) fn classify(e: lapin::Error) -> BusError {
    let text = e.to_string();
    match e.kind() {
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::InvalidChannelState(..) => BusError::Unavailable(text),
        _ => BusError::Other(text),
    }
}
