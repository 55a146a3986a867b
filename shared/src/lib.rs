//! Settle's shared library: the pure domain, configuration and secrets, telemetry,
//! RFC 9457 problem documents, and the ports (with their in-memory and real adapters)
//! through which the three functions reach MongoDB, Redis, RabbitMQ, S3, SQS and
//! Secrets Manager.

pub mod auth;
pub mod aws;
pub mod backends;
pub mod config;
pub mod domain;
pub mod first_invocation;
pub mod health;
pub mod metrics;
pub mod net;
pub mod otel;
pub mod outbox;
pub mod ports;
pub mod problem;
pub mod redact;
pub mod settlements;
pub mod telemetry;
pub mod tls;
pub mod webhook_signature;
pub mod webhooks;

pub use backends::Backends;
pub use config::Config;
