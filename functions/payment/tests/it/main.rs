//! Payment API integration tests against the real MongoDB, Redis and RabbitMQ (start
//! them with `scripts/services`). Each test has its own database, Redis prefix and
//! exchange; tokens are minted with the `jsonwebtoken` library as a client would. (`router`
//! alone runs on the in-memory backends: it checks what the router adds to every answer.)

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
mod router;
mod settlements;
mod webhook_endpoints;
