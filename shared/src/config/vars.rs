//! The name of every environment variable Settle's configuration reads, defined once.
//! Each is public contract (docs/configuration.md); the tests spell them out to pin them.

/// Set by Lambda: the function's name.
pub const AWS_LAMBDA_FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";
/// Client ranges allowed on admin routes; set but empty closes them.
pub const ADMIN_CIDRS: &str = "SETTLE_ADMIN_CIDRS";
/// RabbitMQ / Amazon MQ (a secret value).
pub const AMQP_URL: &str = "SETTLE_AMQP_URL";
/// One endpoint for every AWS client (the emulator locally).
pub const AWS_ENDPOINT_URL: &str = "SETTLE_AWS_ENDPOINT_URL";
/// `memory` or `real`.
pub const BACKEND: &str = "SETTLE_BACKEND";
/// The settlement files' bucket.
pub const BUCKET: &str = "SETTLE_BUCKET";
/// Keys card fingerprints (a secret value).
pub const CARD_FINGERPRINT_KEY: &str = "SETTLE_CARD_FINGERPRINT_KEY";
/// Bound on each dependency call.
pub const DEPENDENCY_TIMEOUT_MS: &str = "SETTLE_DEPENDENCY_TIMEOUT_MS";
/// The topic exchange events are published to.
pub const EVENTS_EXCHANGE: &str = "SETTLE_EVENTS_EXCHANGE";
/// A private CA for MongoDB, Redis and RabbitMQ.
pub const EXTRA_CA_FILE: &str = "SETTLE_EXTRA_CA_FILE";
/// Verifies the gateway's webhooks (a secret value).
pub const GATEWAY_WEBHOOK_SECRET: &str = "SETTLE_GATEWAY_WEBHOOK_SECRET";
/// Where the local stack serves the Payment API.
pub const HTTP_ADDR: &str = "SETTLE_HTTP_ADDR";
/// `RS256`, `ES256` or `HS256`.
pub const JWT_ALGORITHM: &str = "SETTLE_JWT_ALGORITHM";
/// The `aud` tokens must carry.
pub const JWT_AUDIENCE: &str = "SETTLE_JWT_AUDIENCE";
/// The `iss` tokens must carry.
pub const JWT_ISSUER: &str = "SETTLE_JWT_ISSUER";
/// The issuer's public key, key set or HMAC secret (a secret value).
pub const JWT_KEY: &str = "SETTLE_JWT_KEY";
/// The longest token lifetime accepted.
pub const JWT_MAX_LIFETIME_SECS: &str = "SETTLE_JWT_MAX_LIFETIME_SECS";
/// The database name.
pub const MONGODB_DATABASE: &str = "SETTLE_MONGODB_DATABASE";
/// MongoDB (a secret value).
pub const MONGODB_URI: &str = "SETTLE_MONGODB_URI";
/// The queue the notifier consumes.
pub const NOTIFY_QUEUE: &str = "SETTLE_NOTIFY_QUEUE";
/// Requests per client address on public routes (`N/PERIOD`).
pub const RATE_LIMIT_IP: &str = "SETTLE_RATE_LIMIT_IP";
/// Requests per merchant (`N/PERIOD`).
pub const RATE_LIMIT_MERCHANT: &str = "SETTLE_RATE_LIMIT_MERCHANT";
/// Refunds per merchant (`N/PERIOD`).
pub const RATE_LIMIT_REFUNDS: &str = "SETTLE_RATE_LIMIT_REFUNDS";
/// Card tokens per merchant (`N/PERIOD`).
pub const RATE_LIMIT_TOKENS: &str = "SETTLE_RATE_LIMIT_TOKENS";
/// Prefix of every Redis key Settle writes.
pub const REDIS_PREFIX: &str = "SETTLE_REDIS_PREFIX";
/// Redis (a secret value).
pub const REDIS_URL: &str = "SETTLE_REDIS_URL";
/// The SQS queue of webhook retries.
pub const RETRY_QUEUE_URL: &str = "SETTLE_RETRY_QUEUE_URL";
/// How long secret values are used before they are read again.
pub const SECRETS_TTL_SECS: &str = "SETTLE_SECRETS_TTL_SECS";
/// Secrets Manager secrets to read values from (comma-separated).
pub const SECRET_ID: &str = "SETTLE_SECRET_ID";
/// Local development only: webhooks to private addresses.
pub const WEBHOOK_ALLOW_PRIVATE: &str = "SETTLE_WEBHOOK_ALLOW_PRIVATE";
/// An endpoint failing everything this long is disabled.
pub const WEBHOOK_DISABLE_AFTER_SECS: &str = "SETTLE_WEBHOOK_DISABLE_AFTER_SECS";
/// An SQS queue for operators' copies of dead deliveries.
pub const WEBHOOK_DLQ_URL: &str = "SETTLE_WEBHOOK_DLQ_URL";
/// Seals webhook signing secrets at rest (a secret value).
pub const WEBHOOK_MASTER_KEY: &str = "SETTLE_WEBHOOK_MASTER_KEY";
/// Waits before each webhook retry (`5s,5m,…`).
pub const WEBHOOK_RETRY_SCHEDULE: &str = "SETTLE_WEBHOOK_RETRY_SCHEDULE";
/// Bound on one webhook attempt.
pub const WEBHOOK_TIMEOUT_MS: &str = "SETTLE_WEBHOOK_TIMEOUT_MS";
