//! The notifier against a real local HTTP receiver, MongoDB, RabbitMQ and the SQS
//! emulator: signatures, rotation, retries on a compressed schedule, 410, isolation from
//! a hanging receiver, dead letters, duplicates, resends.
//! The harness is in `harness`; the tests by what they cover: `deliveries` (one attempt and
//! what follows it), `batches` (a batch's messages, each on its own), `dispatch` (the
//! schedule and the custom resource).

mod batches;
mod deliveries;
mod dispatch;
mod harness;
