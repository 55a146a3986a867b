//! The payment and refund state machines, as Stripe's PaymentIntent and Refund. Pure:
//! given a state and what happened, the next state, or why it is not allowed.

use super::card::GatewayProfile;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
    Failed,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 7] = [
        PaymentStatus::RequiresConfirmation,
        PaymentStatus::RequiresAction,
        PaymentStatus::Processing,
        PaymentStatus::RequiresCapture,
        PaymentStatus::Succeeded,
        PaymentStatus::Canceled,
        PaymentStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::RequiresConfirmation => "requires_confirmation",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Processing => "processing",
            PaymentStatus::RequiresCapture => "requires_capture",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentStatus> {
        PaymentStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    #[default]
    Automatic,
    Manual,
}

/// Why a payment or refund failed, as the gateway reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    CardDeclined,
    InsufficientFunds,
    ProcessingError,
    AuthenticationFailed,
    RefundFailed,
}

impl FailureCode {
    /// Whether trying again later may succeed.
    pub fn retryable(self) -> bool {
        self == FailureCode::ProcessingError
    }
}

/// What a request asks of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Confirm,
    ApproveChallenge,
    RejectChallenge,
    /// Capture this many minor units (at most the authorised amount, once).
    Capture {
        amount: i64,
    },
    Cancel,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Confirm => "confirm",
            Action::ApproveChallenge => "approve the 3-D Secure challenge of",
            Action::RejectChallenge => "reject the 3-D Secure challenge of",
            Action::Capture { .. } => "capture",
            Action::Cancel => "cancel",
        }
    }
}

/// The result of an allowed action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: PaymentStatus,
    /// Set when the gateway refused (the payment may or may not have moved).
    pub failure: Option<FailureCode>,
    /// The amount captured by this transition, if it captured.
    pub captured: Option<i64>,
    /// The event type the transition publishes, if any.
    pub event: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {action} a payment in status {current}", current = .current.as_str())]
    Illegal { action: &'static str, current: PaymentStatus },
    #[error("capture amount must be between 1 and the authorised {authorised}")]
    CaptureAmount { authorised: i64 },
}

/// The facts of a payment the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct PaymentFacts {
    pub status: PaymentStatus,
    pub capture_method: CaptureMethod,
    pub amount: i64,
    pub profile: GatewayProfile,
}

fn authorised(facts: &PaymentFacts, event_if_captured: &'static str) -> Transition {
    match facts.capture_method {
        CaptureMethod::Automatic => Transition {
            status: PaymentStatus::Succeeded,
            failure: None,
            captured: Some(facts.amount),
            event: Some(event_if_captured),
        },
        CaptureMethod::Manual => {
            Transition { status: PaymentStatus::RequiresCapture, failure: None, captured: None, event: None }
        }
    }
}

fn failed(code: FailureCode) -> Transition {
    Transition { status: PaymentStatus::Failed, failure: Some(code), captured: None, event: Some("payment.failed") }
}

/// The next state of a payment for `action`, with the simulated gateway's answer.
pub fn transition(facts: &PaymentFacts, action: Action) -> Result<Transition, TransitionError> {
    use GatewayProfile as G;
    use PaymentStatus as S;
    let illegal = || TransitionError::Illegal { action: action.name(), current: facts.status };
    match (facts.status, action) {
        (S::RequiresConfirmation, Action::Confirm) => Ok(match facts.profile {
            G::Succeeds | G::RefundsFailLater => authorised(facts, "payment.succeeded"),
            G::Declined => failed(FailureCode::CardDeclined),
            G::InsufficientFunds => failed(FailureCode::InsufficientFunds),
            // Retryable: the payment stays confirmable, the error is reported.
            G::ProcessingError => Transition {
                status: S::RequiresConfirmation,
                failure: Some(FailureCode::ProcessingError),
                captured: None,
                event: None,
            },
            G::ThreeDsRequired | G::ThreeDsThenDeclined => Transition {
                status: S::RequiresAction,
                failure: None,
                captured: None,
                event: Some("payment.requires_action"),
            },
        }),
        (S::RequiresAction, Action::ApproveChallenge) => Ok(match facts.profile {
            G::ThreeDsThenDeclined => failed(FailureCode::CardDeclined),
            _ => authorised(facts, "payment.succeeded"),
        }),
        (S::RequiresAction, Action::RejectChallenge) => Ok(failed(FailureCode::AuthenticationFailed)),
        (S::RequiresCapture, Action::Capture { amount }) => {
            if !(1..=facts.amount).contains(&amount) {
                return Err(TransitionError::CaptureAmount { authorised: facts.amount });
            }
            Ok(Transition {
                status: S::Succeeded,
                failure: None,
                captured: Some(amount),
                event: Some("payment.captured"),
            })
        }
        (S::RequiresConfirmation | S::RequiresAction | S::RequiresCapture, Action::Cancel) => {
            Ok(Transition { status: S::Canceled, failure: None, captured: None, event: Some("payment.canceled") })
        }
        _ => Err(illegal()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    #[error("only a succeeded payment can be refunded (this one is {current})", current = .current.as_str())]
    NotRefundable { current: PaymentStatus },
    #[error("refund amount exceeds what remains refundable ({remaining})")]
    ExceedsCaptured { remaining: i64 },
}

/// Checks a refund of `amount` against what was captured and what is already refunded
/// or being refunded; returns the refund's initial status.
pub fn refund(
    status: PaymentStatus,
    captured: i64,
    already_refunded: i64,
    amount: i64,
    profile: GatewayProfile,
) -> Result<RefundStatus, RefundError> {
    if status != PaymentStatus::Succeeded {
        return Err(RefundError::NotRefundable { current: status });
    }
    let remaining = captured - already_refunded;
    if amount > remaining {
        return Err(RefundError::ExceedsCaptured { remaining });
    }
    // The simulated gateway settles refunds at once, except for the card whose refunds
    // fail later (reported by an inbound gateway webhook).
    Ok(if profile == GatewayProfile::RefundsFailLater { RefundStatus::Pending } else { RefundStatus::Succeeded })
}

#[cfg(test)]
mod tests {
    use super::*;
    use GatewayProfile as G;
    use PaymentStatus as S;

    fn facts(status: S, method: CaptureMethod, profile: G) -> PaymentFacts {
        PaymentFacts { status, capture_method: method, amount: 1000, profile }
    }

    #[test]
    fn confirm_follows_the_test_card_table() {
        let confirm =
            |profile, method| transition(&facts(S::RequiresConfirmation, method, profile), Action::Confirm).unwrap();
        let auto = CaptureMethod::Automatic;
        assert_eq!(confirm(G::Succeeds, auto).status, S::Succeeded);
        assert_eq!(confirm(G::Succeeds, auto).captured, Some(1000));
        assert_eq!(confirm(G::Succeeds, CaptureMethod::Manual).status, S::RequiresCapture);
        assert_eq!(confirm(G::Declined, auto).failure, Some(FailureCode::CardDeclined));
        assert_eq!(confirm(G::InsufficientFunds, auto).failure, Some(FailureCode::InsufficientFunds));
        let retry = confirm(G::ProcessingError, auto);
        assert_eq!(
            (retry.status, retry.failure, retry.event),
            (S::RequiresConfirmation, Some(FailureCode::ProcessingError), None)
        );
        assert_eq!(confirm(G::ThreeDsRequired, auto).event, Some("payment.requires_action"));
        assert_eq!(confirm(G::RefundsFailLater, auto).status, S::Succeeded);
    }

    #[test]
    fn three_ds_approve_and_reject_differ() {
        let pending = |p| facts(S::RequiresAction, CaptureMethod::Automatic, p);
        assert_eq!(transition(&pending(G::ThreeDsRequired), Action::ApproveChallenge).unwrap().status, S::Succeeded);
        let declined = transition(&pending(G::ThreeDsThenDeclined), Action::ApproveChallenge).unwrap();
        assert_eq!(declined.failure, Some(FailureCode::CardDeclined));
        let rejected = transition(&pending(G::ThreeDsRequired), Action::RejectChallenge).unwrap();
        assert_eq!((rejected.status, rejected.failure), (S::Failed, Some(FailureCode::AuthenticationFailed)));
    }

    #[test]
    fn capture_is_partial_once_and_bounded() {
        let held = facts(S::RequiresCapture, CaptureMethod::Manual, G::Succeeds);
        let t = transition(&held, Action::Capture { amount: 400 }).unwrap();
        assert_eq!((t.status, t.captured, t.event), (S::Succeeded, Some(400), Some("payment.captured")));
        assert_eq!(
            transition(&held, Action::Capture { amount: 1001 }),
            Err(TransitionError::CaptureAmount { authorised: 1000 })
        );
        let done = facts(S::Succeeded, CaptureMethod::Manual, G::Succeeds);
        assert!(matches!(transition(&done, Action::Capture { amount: 1 }), Err(TransitionError::Illegal { .. })));
    }

    #[test]
    fn every_illegal_transition_is_refused_with_the_current_state() {
        let actions = [
            Action::Confirm,
            Action::ApproveChallenge,
            Action::RejectChallenge,
            Action::Capture { amount: 1 },
            Action::Cancel,
        ];
        let mut allowed = 0;
        for status in S::ALL {
            for action in actions {
                match transition(&facts(status, CaptureMethod::Manual, G::Succeeds), action) {
                    Ok(_) => allowed += 1,
                    Err(TransitionError::Illegal { current, .. }) => assert_eq!(current, status),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // confirm, approve, reject, capture, and cancel from three states.
        assert_eq!(allowed, 7);
    }

    #[test]
    fn refunds_never_exceed_the_capture() {
        assert_eq!(refund(S::Succeeded, 1000, 700, 300, G::Succeeds), Ok(RefundStatus::Succeeded));
        assert_eq!(
            refund(S::Succeeded, 1000, 701, 300, G::Succeeds),
            Err(RefundError::ExceedsCaptured { remaining: 299 })
        );
        assert_eq!(refund(S::Succeeded, 1000, 0, 10, G::RefundsFailLater), Ok(RefundStatus::Pending));
        assert!(matches!(refund(S::RequiresCapture, 0, 0, 1, G::Succeeds), Err(RefundError::NotRefundable { .. })));
    }
}
