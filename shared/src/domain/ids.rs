//! Prefixed identifiers (`pay_…`, `re_…`, `tok_…`, `evt_…`): parsed, never trusted raw.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must look like {prefix}<32 lowercase hex characters>")]
pub struct IdError {
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id. UUIDv7 underneath, so ids sort by creation time, which
            /// keeps `_id`-ordered cursor pagination in creation order.
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn parse(text: &str) -> Result<Self, IdError> {
                let valid = text
                    .strip_prefix($prefix)
                    .is_some_and(|rest| {
                        rest.len() == 32
                            && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                if valid {
                    Ok($name(text.to_string()))
                } else {
                    Err(IdError { prefix: $prefix })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A payment, as Stripe's PaymentIntent.
    PaymentId, "pay_"
);
prefixed_id!(
    /// A refund of (part of) a payment.
    RefundId, "re_"
);
prefixed_id!(
    /// A card token standing in for a card number that is never stored.
    TokenId, "tok_"
);
prefixed_id!(
    /// A Settle event (CloudEvent `id`).
    EventId, "evt_"
);
prefixed_id!(
    /// A merchant's webhook endpoint.
    EndpointId, "we_"
);

/// A merchant id as issued by the operator (`m_` plus letters, digits, `_` or `-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MerchantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be m_ followed by 1 to 64 letters, digits, '_' or '-'")]
pub struct MerchantIdError;

impl MerchantId {
    pub fn parse(text: &str) -> Result<Self, MerchantIdError> {
        let rest = text.strip_prefix("m_").ok_or(MerchantIdError)?;
        let ok =
            (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(MerchantId(text.to_string()))
        } else {
            Err(MerchantIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MerchantId {
    type Error = MerchantIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MerchantId::parse(&s)
    }
}

impl From<MerchantId> for String {
    fn from(id: MerchantId) -> String {
        id.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_time() {
        let a = PaymentId::generate();
        let b = PaymentId::generate();
        assert_eq!(PaymentId::parse(a.as_str()), Ok(a.clone()));
        assert!(a < b, "UUIDv7 ids must sort in creation order");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "pay_",
            "re_0123456789abcdef0123456789abcdef",
            "pay_0123456789ABCDEF0123456789abcdef",
            "pay_{\"$gt\":\"\"}",
            "pay_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(PaymentId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<PaymentId>("{\"$gt\":\"\"}").is_err());
    }

    #[test]
    fn merchant_ids_are_bounded() {
        assert!(MerchantId::parse("m_123").is_ok());
        assert!(MerchantId::parse("m_").is_err());
        assert!(MerchantId::parse("123").is_err());
        assert!(MerchantId::parse("m_a b").is_err());
        assert!(MerchantId::parse(&format!("m_{}", "a".repeat(65))).is_err());
    }
}
