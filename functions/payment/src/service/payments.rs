//! Payments: create (confirming at once if asked) and every later transition, each
//! stored with its event in one transaction; a lost race re-reads and decides again.

use super::{race_pause, RACE_RETRIES};
use crate::error::ApiError;
use crate::outbox::{self, Origin};
use crate::store::{idempotency_hash, now_ms, PaymentRecord, TokenRecord, TOKENS};
use crate::views::view_json;
use crate::{state::AppState, store};
use settle_shared::domain::event::CloudEvent;
use settle_shared::domain::ids::{MerchantId, PaymentId, TokenId};
use settle_shared::domain::money::{Amount, Currency};
use settle_shared::domain::payment::{
    transition, Action, CaptureMethod, PaymentFacts, PaymentStatus, Transition, TransitionError,
};
use settle_shared::ports::documents::StoreError;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// A payment to create, as the edge has parsed and checked it.
#[derive(Debug)]
pub struct NewPayment {
    pub merchant: MerchantId,
    pub amount: Amount,
    pub currency: Currency,
    pub token: TokenId,
    pub capture_method: CaptureMethod,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Confirm at once (Stripe's `confirm=true`).
    pub confirm: bool,
    pub idempotency_key: String,
}

/// Creates the payment, or answers the one an earlier execution with the same
/// Idempotency-Key committed (its answer was lost): never a second payment.
pub async fn create(state: &AppState, new: NewPayment, origin: &Origin, base: &str) -> Result<PaymentRecord, ApiError> {
    let merchant = new.merchant.as_str();
    let token: TokenRecord = store::load(state, TOKENS, new.token.as_str())
        .await?
        .filter(|t: &TokenRecord| t.merchant_id == merchant)
        .ok_or_else(|| ApiError::field("token", "no such token"))?;
    let now = now_ms();
    let mut record = PaymentRecord {
        id: PaymentId::generate().to_string(),
        merchant_id: merchant.to_string(),
        amount: new.amount.minor_units(),
        currency: new.currency.code().to_string(),
        capture_method: new.capture_method,
        status: PaymentStatus::RequiresConfirmation,
        description: new.description,
        metadata: new.metadata,
        token_id: token.id,
        card: token.card,
        profile: token.profile,
        amount_captured: 0,
        amount_refunded: 0,
        failure_code: None,
        challenge: None,
        challenge_base: None,
        created: now,
        updated: now,
        version: 1,
        idempotency_hash: Some(idempotency_hash(merchant, &new.idempotency_key)),
    };
    let mut events = Vec::new();
    if new.confirm {
        let t = transition(&facts(&record), Action::Confirm).map_err(state_error(record.status))?;
        apply(&mut record, &t, base);
        events.extend(event_of(&t, &record, origin));
    }
    match state.payments().insert(&record, &events).await {
        Ok(()) => {}
        Err(StoreError::Duplicate { .. }) => {
            let hash = record.idempotency_hash.unwrap_or_default();
            return state
                .payments()
                .created_with_key(merchant, &hash)
                .await?
                .ok_or(ApiError::Conflict("a request with this Idempotency-Key is finishing; retry"));
        }
        Err(e) => return Err(e.into()),
    }
    crate::metrics::count(
        "Payments",
        &[("Outcome", record.status.as_str()), ("Currency", &record.currency)],
        &[("payment_id", serde_json::json!(record.id))],
    );
    Ok(record)
}

/// Who may act on a payment: its merchant, or the holder of its 3-D Secure challenge.
pub enum Actor<'a> {
    Merchant(&'a str),
    Challenge(&'a str),
}

impl Actor<'_> {
    fn may_act_on(&self, payment: &PaymentRecord) -> bool {
        match self {
            Actor::Merchant(m) => payment.merchant_id == *m,
            Actor::Challenge(secret) => {
                payment.challenge.as_deref().is_some_and(|c| bool::from(c.as_bytes().ct_eq(secret.as_bytes())))
            }
        }
    }
}

/// Loads, checks, transitions and stores a payment, again after a lost race. `action` is
/// decided on the payment as read (a capture defaults to the authorised amount).
pub async fn act(
    state: &AppState,
    id: &str,
    actor: Actor<'_>,
    action: impl Fn(&PaymentRecord) -> Action,
    origin: &Origin,
    base: &str,
) -> Result<PaymentRecord, ApiError> {
    for attempt in 0..RACE_RETRIES {
        let current = state.payments().get(id).await?.filter(|p| actor.may_act_on(p));
        let current = current.ok_or(ApiError::NotFound("payment"))?;
        let t = transition(&facts(&current), action(&current)).map_err(state_error(current.status))?;
        let mut next = current.clone();
        apply(&mut next, &t, base);
        let events: Vec<_> = event_of(&t, &next, origin).into_iter().collect();
        match state.payments().replace(current.version, &next, &events).await {
            Ok(()) => return Ok(next),
            Err(StoreError::Conflict(_)) => tokio::time::sleep(race_pause(attempt)).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Unavailable("MongoDB (too much contention on this payment)"))
}

fn facts(p: &PaymentRecord) -> PaymentFacts {
    PaymentFacts { status: p.status, capture_method: p.capture_method, amount: p.amount, profile: p.profile }
}

fn state_error(current: PaymentStatus) -> impl Fn(TransitionError) -> ApiError {
    move |e| match e {
        TransitionError::Illegal { .. } => ApiError::InvalidState { detail: e.to_string(), current },
        TransitionError::CaptureAmount { .. } => ApiError::field("amount_to_capture", e.to_string()),
    }
}

/// Applies a transition to the record (not yet stored).
fn apply(p: &mut PaymentRecord, t: &Transition, base: &str) {
    p.status = t.status;
    p.failure_code = t.failure;
    if let Some(captured) = t.captured {
        p.amount_captured = captured;
    }
    if t.status == PaymentStatus::RequiresAction {
        p.challenge = Some(hex::encode(rand::random::<[u8; 16]>()));
        p.challenge_base = Some(base.to_string());
    } else {
        p.challenge = None;
        p.challenge_base = None;
    }
    p.version += 1;
    p.updated = now_ms();
}

/// The event a transition publishes about the payment as it now is, if any.
fn event_of(t: &Transition, p: &PaymentRecord, origin: &Origin) -> Option<CloudEvent> {
    let event_type = t.event?;
    Some(outbox::event(event_type, &p.merchant_id, &p.id, p.version, view_json(p), origin))
}
