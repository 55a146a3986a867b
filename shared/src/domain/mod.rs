//! Pure domain types and rules: no I/O, no SDK, no runtime. Everything here can be
//! unit-tested with plain values.

pub mod card;
pub mod event;
pub mod ids;
pub mod money;
pub mod payment;
