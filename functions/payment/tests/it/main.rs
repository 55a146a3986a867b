//! Payment API integration tests against the real MongoDB, Redis and RabbitMQ (start
//! them with `scripts/services`). Each test has its own database, Redis prefix and
//! exchange; tokens are minted with the `jsonwebtoken` library as a client would.

mod helpers;

mod auth;
mod events;
mod fuzz;
mod idempotency;
mod input;
mod metrics;
mod payments;
mod refunds;
mod rotation;
mod settlements;
mod webhook_endpoints;
