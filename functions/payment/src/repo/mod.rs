//! Repositories: the Payment API's storage by named methods, so that services never
//! spell a collection or a field. Each borrows the state's document store (and, for
//! payments, the cache); money changes go through them as one transaction with their
//! outbox events.

mod payments;
mod refunds;

pub use payments::{PaymentFilter, Payments};
pub use refunds::Refunds;

use crate::state::AppState;

impl AppState {
    pub fn payments(&self) -> Payments<'_> {
        Payments { state: self }
    }

    pub fn refunds(&self) -> Refunds<'_> {
        Refunds { state: self }
    }
}
