//! Cards: number validation (Luhn, brand, length), expiry, CVC length by brand, and the
//! simulated gateway's test-card table. A card number never prints: `CardNumber` masks
//! itself, and no error carries it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    DinersClub,
    Unionpay,
}

impl Brand {
    /// Valid lengths of a number of this brand.
    fn lengths(self) -> &'static [usize] {
        match self {
            Brand::Visa => &[13, 16, 19],
            Brand::Mastercard => &[16],
            Brand::Amex => &[15],
            Brand::Discover | Brand::Jcb | Brand::Unionpay => &[16, 17, 18, 19],
            Brand::DinersClub => &[14, 16],
        }
    }

    /// American Express prints a 4-digit CID on the front; the others a 3-digit CVC.
    pub fn cvc_length(self) -> usize {
        if self == Brand::Amex {
            4
        } else {
            3
        }
    }

    fn detect(digits: &str) -> Option<Brand> {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        let brand = match () {
            _ if digits.starts_with('4') => Brand::Visa,
            _ if (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)) => Brand::Mastercard,
            _ if matches!(prefix(2), 34 | 37) => Brand::Amex,
            _ if prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)) => Brand::Discover,
            _ if (3528..=3589).contains(&prefix(4)) => Brand::Jcb,
            _ if (300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39) => Brand::DinersClub,
            _ if prefix(2) == 62 => Brand::Unionpay,
            _ => return None,
        };
        Some(brand)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("card number must be 12 to 19 digits")]
    NumberFormat,
    #[error("card number fails the Luhn check")]
    Luhn,
    #[error("card brand is not supported")]
    UnknownBrand,
    #[error("card number has the wrong length for its brand")]
    LengthForBrand,
    #[error("expiry month must be between 1 and 12")]
    ExpiryMonth,
    #[error("expiry year must be a four-digit year")]
    ExpiryYear,
    #[error("card has expired")]
    Expired,
    #[error("CVC must be {expected} digits for this brand")]
    Cvc { expected: usize },
}

impl CardError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            CardError::NumberFormat | CardError::Luhn | CardError::UnknownBrand | CardError::LengthForBrand => "number",
            CardError::ExpiryMonth => "exp_month",
            CardError::ExpiryYear | CardError::Expired => "exp_year",
            CardError::Cvc { .. } => "cvc",
        }
    }
}

/// A validated primary account number. Only [`CardNumber::last4`] and the keyed
/// fingerprint ever leave it.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber {
    digits: String,
    brand: Brand,
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({:?} ****)", self.brand)
    }
}

impl CardNumber {
    /// Accepts digits, optionally grouped by spaces or dashes.
    pub fn parse(text: &str) -> Result<CardNumber, CardError> {
        if text.len() > 32 {
            return Err(CardError::NumberFormat);
        }
        let digits: String = text.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::NumberFormat);
        }
        if !luhn_valid(&digits) {
            return Err(CardError::Luhn);
        }
        let brand = Brand::detect(&digits).ok_or(CardError::UnknownBrand)?;
        if !brand.lengths().contains(&digits.len()) {
            return Err(CardError::LengthForBrand);
        }
        Ok(CardNumber { digits, brand })
    }

    pub fn brand(&self) -> Brand {
        self.brand
    }

    pub fn last4(&self) -> &str {
        &self.digits[self.digits.len() - 4..]
    }

    /// The digits, for keyed hashing only.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }

    /// How the simulated gateway treats this card (Stripe's test numbers).
    pub fn gateway_profile(&self) -> GatewayProfile {
        TEST_CARDS.iter().find(|(n, _)| *n == self.digits).map_or(GatewayProfile::Succeeds, |(_, p)| *p)
    }
}

/// The Luhn (mod 10) checksum.
pub fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if !i.is_multiple_of(2) {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Checks expiry (the card is valid through the last day of its month) and the CVC.
pub fn check_expiry_and_cvc(
    brand: Brand,
    exp_month: u32,
    exp_year: u32,
    cvc: &str,
    today: chrono::NaiveDate,
) -> Result<(), CardError> {
    use chrono::Datelike;
    if !(1..=12).contains(&exp_month) {
        return Err(CardError::ExpiryMonth);
    }
    if !(2000..=2100).contains(&exp_year) {
        return Err(CardError::ExpiryYear);
    }
    let now = (today.year() as u32, today.month());
    if (exp_year, exp_month) < now {
        return Err(CardError::Expired);
    }
    let expected = brand.cvc_length();
    if cvc.len() != expected || !cvc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::Cvc { expected });
    }
    Ok(())
}

/// The simulated gateway's behaviour for a card, decided by the test number and stored
/// with the token (the number itself is not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayProfile {
    /// Authorises and captures normally (4242 4242 4242 4242 and any other valid card).
    Succeeds,
    /// `card_declined` (4000 0000 0000 0002).
    Declined,
    /// `insufficient_funds` (4000 0000 0000 9995).
    InsufficientFunds,
    /// `processing_error`, retryable (4000 0000 0000 0119).
    ProcessingError,
    /// Needs 3-D Secure, then succeeds if approved (4000 0027 6000 3184).
    ThreeDsRequired,
    /// Needs 3-D Secure, then declines even if approved (4000 0084 0000 1629).
    ThreeDsThenDeclined,
    /// Succeeds, but its refunds fail asynchronously (4000 0000 0000 5126).
    RefundsFailLater,
}

/// Stripe's test numbers and what the simulated gateway does with each.
pub const TEST_CARDS: &[(&str, GatewayProfile)] = &[
    ("4242424242424242", GatewayProfile::Succeeds),
    ("4000000000000002", GatewayProfile::Declined),
    ("4000000000009995", GatewayProfile::InsufficientFunds),
    ("4000000000000119", GatewayProfile::ProcessingError),
    ("4000002760003184", GatewayProfile::ThreeDsRequired),
    ("4000008400001629", GatewayProfile::ThreeDsThenDeclined),
    ("4000000000005126", GatewayProfile::RefundsFailLater),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_are_valid_visa_numbers_with_their_profile() {
        for (number, profile) in TEST_CARDS {
            let card = CardNumber::parse(number).unwrap();
            assert_eq!(card.brand(), Brand::Visa);
            assert_eq!(card.gateway_profile(), *profile);
        }
        assert_eq!(CardNumber::parse("4242 4242-4242 4242").unwrap().last4(), "4242");
    }

    #[test]
    fn brands_are_detected_with_their_cvc_length() {
        assert_eq!(CardNumber::parse("5555555555554444").unwrap().brand(), Brand::Mastercard);
        assert_eq!(CardNumber::parse("2223003122003222").unwrap().brand(), Brand::Mastercard);
        let amex = CardNumber::parse("378282246310005").unwrap();
        assert_eq!((amex.brand(), amex.brand().cvc_length()), (Brand::Amex, 4));
        assert_eq!(CardNumber::parse("6011111111111117").unwrap().brand(), Brand::Discover);
        assert_eq!(CardNumber::parse("3566002020360505").unwrap().brand(), Brand::Jcb);
    }

    #[test]
    fn bad_numbers_are_rejected_without_echoing_them() {
        assert_eq!(CardNumber::parse("4242424242424241"), Err(CardError::Luhn));
        assert_eq!(CardNumber::parse("4242"), Err(CardError::NumberFormat));
        assert_eq!(CardNumber::parse("42424242424242a2"), Err(CardError::NumberFormat));
        assert_eq!(CardNumber::parse("9999999999999995"), Err(CardError::UnknownBrand));
        let card = CardNumber::parse("4242424242424242").unwrap();
        assert!(!format!("{card:?}").contains("4242"));
        for bad in ["4242424242424241", "4242", "99999999999999995"] {
            let e = CardNumber::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("4242") && !e.to_string().contains("9999"), "{e}");
        }
    }

    #[test]
    fn expiry_and_cvc_are_checked() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(check_expiry_and_cvc(Brand::Visa, 11, 2026, "123", today), Ok(()));
        assert_eq!(check_expiry_and_cvc(Brand::Visa, 10, 2026, "123", today), Err(CardError::Expired));
        assert_eq!(check_expiry_and_cvc(Brand::Visa, 13, 2030, "123", today), Err(CardError::ExpiryMonth));
        assert_eq!(check_expiry_and_cvc(Brand::Visa, 1, 30, "123", today), Err(CardError::ExpiryYear));
        assert_eq!(check_expiry_and_cvc(Brand::Amex, 1, 2030, "123", today), Err(CardError::Cvc { expected: 4 }));
        assert_eq!(check_expiry_and_cvc(Brand::Visa, 1, 2030, "12a", today), Err(CardError::Cvc { expected: 3 }));
    }
}
