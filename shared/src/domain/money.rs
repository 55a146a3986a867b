//! Money: an amount in a currency's minor units, never a float.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ISO 4217 currency Settle accepts, with its minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// ISO 4217 codes with their exponents. Kept explicit: a currency the table does not
/// know is rejected rather than guessed at, because a wrong exponent moves money by 100x.
const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code (expected an ISO 4217 code such as USD)")]
    UnknownCurrency,
    #[error("amount must be a whole number of minor units between 1 and {max}")]
    OutOfRange { max: i64 },
    #[error("not a decimal amount")]
    NotDecimal,
    #[error("more decimal places than the currency has ({exponent})")]
    TooPrecise { exponent: u8 },
}

/// Every currency code Settle accepts.
pub fn supported_currencies() -> impl Iterator<Item = &'static str> {
    CURRENCIES.iter().map(|(code, _)| *code)
}

impl Currency {
    pub fn code(&self) -> &str {
        // The constructor only admits ASCII codes from the table.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Number of decimal places of the minor unit (2 for USD, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_ascii(s.as_bytes())
    }
}

impl Currency {
    /// Case-insensitive, without allocating, over packed codes: settlement files parse
    /// this once a row, from raw bytes.
    #[inline]
    pub fn from_ascii(code: &[u8]) -> Result<Currency, MoneyError> {
        let &[a, b, c] = code else { return Err(MoneyError::UnknownCurrency) };
        let letter = |b: u8| {
            let upper = b.to_ascii_uppercase();
            upper.is_ascii_uppercase().then(|| usize::from(upper - b'A'))
        };
        let (Some(a), Some(b), Some(c)) = (letter(a), letter(b), letter(c)) else {
            return Err(MoneyError::UnknownCurrency);
        };
        let slot = CODE_INDEX[(a * 26 + b) * 26 + c];
        let index = usize::from(slot).checked_sub(1).ok_or(MoneyError::UnknownCurrency)?;
        let (code, exponent) = CURRENCIES[index];
        let b = code.as_bytes();
        Ok(Currency { code: [b[0], b[1], b[2]], exponent })
    }
}

/// Every three-letter code A..Z to 1 + its index in `CURRENCIES` (0: not accepted),
/// built at compile time: one load per lookup, 17.5 KB.
static CODE_INDEX: [u8; 26 * 26 * 26] = {
    let mut table = [0u8; 26 * 26 * 26];
    let mut i = 0;
    while i < CURRENCIES.len() {
        let b = CURRENCIES[i].0.as_bytes();
        let slot = ((b[0] - b'A') as usize * 26 + (b[1] - b'A') as usize) * 26 + (b[2] - b'A') as usize;
        table[slot] = (i + 1) as u8;
        i += 1;
    }
    table
};

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A positive amount in minor units. Bounded well below `i64::MAX` so that sums of many
/// amounts cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

impl Amount {
    /// 10^15 minor units: far above any single payment, far below overflow when summed.
    pub const MAX: i64 = 1_000_000_000_000_000;

    pub fn new(minor_units: i64) -> Result<Self, MoneyError> {
        if (1..=Self::MAX).contains(&minor_units) {
            Ok(Amount(minor_units))
        } else {
            Err(MoneyError::OutOfRange { max: Self::MAX })
        }
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = MoneyError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Amount::new(v)
    }
}

impl From<Amount> for i64 {
    fn from(a: Amount) -> i64 {
        a.0
    }
}

/// Parses a decimal string ("12.34", "-0.5", "100") into signed minor units of `currency`,
/// exactly: digits are shifted by the exponent, never passed through a float.
pub fn parse_decimal_minor_units(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    parse_decimal_ascii(text.trim().as_bytes(), currency)
}

/// [`parse_decimal_minor_units`] over raw bytes (a CSV field before any UTF-8 check: the
/// grammar is ASCII, so any other byte is simply not a decimal).
#[inline]
pub fn parse_decimal_ascii(text: &[u8], currency: Currency) -> Result<i64, MoneyError> {
    // One pass over the bytes: settlement files call this three times a row. Errors keep
    // their precedence: not a decimal, then too precise, then out of range.
    let text = text.trim_ascii();
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    // Saturating arithmetic: a value past u64 saturates to a value past `Amount::MAX`, so
    // it is out of range either way, and that verdict waits until the grammar is checked.
    let mut value: u64 = 0;
    let mut dot_at: Option<usize> = None;
    for (i, &b) in digits.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit < 10 {
            value = value.saturating_mul(10).saturating_add(u64::from(digit));
        } else if b == b'.' && dot_at.is_none() {
            dot_at = Some(i);
        } else {
            return Err(MoneyError::NotDecimal);
        }
    }
    let (whole_digits, fraction_digits) = match dot_at {
        Some(at) => (at, digits.len() - at - 1),
        None => (digits.len(), 0),
    };
    if whole_digits + fraction_digits == 0 || (dot_at.is_some() && fraction_digits == 0) {
        return Err(MoneyError::NotDecimal);
    }
    let exponent = currency.exponent();
    if fraction_digits > usize::from(exponent) {
        return Err(MoneyError::TooPrecise { exponent });
    }
    let value = value.saturating_mul(10u64.pow(u32::from(exponent) - fraction_digits as u32));
    let value = match i64::try_from(value) {
        Ok(v) if v <= Amount::MAX => v,
        _ => return Err(MoneyError::OutOfRange { max: Amount::MAX }),
    };
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Currency {
        code.parse().unwrap()
    }

    #[test]
    fn every_listed_currency_is_found_in_any_case() {
        assert_eq!(CODE_INDEX.iter().filter(|slot| **slot != 0).count(), CURRENCIES.len());
        for code in supported_currencies() {
            assert_eq!(c(code).code(), code);
            assert_eq!(c(&code.to_ascii_lowercase()).code(), code);
        }
        for bad in ["US", "USDX", "U$D", "usd\u{0}", "ÜSD", "ZZZ", "AAA"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn currencies_carry_their_exponent() {
        assert_eq!(c("usd").exponent(), 2);
        assert_eq!(c("JPY").exponent(), 0);
        assert_eq!(c("KWD").exponent(), 3);
        assert_eq!("XYZ".parse::<Currency>(), Err(MoneyError::UnknownCurrency));
        assert_eq!(serde_json::to_string(&c("eur")).unwrap(), "\"EUR\"");
    }

    #[test]
    fn decimals_convert_exactly_by_exponent() {
        assert_eq!(parse_decimal_minor_units("12.34", c("USD")), Ok(1234));
        assert_eq!(parse_decimal_minor_units("0.1", c("USD")), Ok(10));
        assert_eq!(parse_decimal_minor_units("-5", c("USD")), Ok(-500));
        assert_eq!(parse_decimal_minor_units("1500", c("JPY")), Ok(1500));
        assert_eq!(parse_decimal_minor_units("1.234", c("KWD")), Ok(1234));
        // 0.29 * 100 is 28.999999999999996 in binary floating point; this must be 29.
        assert_eq!(parse_decimal_minor_units("0.29", c("USD")), Ok(29));
    }

    #[test]
    fn bad_decimals_are_rejected() {
        for bad in ["", ".", "1.", "1.2.3", "abc", "1e3", "12,30", "--1", " . "] {
            assert_eq!(parse_decimal_minor_units(bad, c("USD")), Err(MoneyError::NotDecimal), "{bad:?}");
        }
        assert_eq!(parse_decimal_minor_units("1.5", c("JPY")), Err(MoneyError::TooPrecise { exponent: 0 }));
        assert!(matches!(
            parse_decimal_minor_units("99999999999999999999", c("USD")),
            Err(MoneyError::OutOfRange { .. })
        ));
        // Past u64, past the bound by one, and leading zeros that are no value at all.
        let out_of_range = Err(MoneyError::OutOfRange { max: Amount::MAX });
        assert_eq!(parse_decimal_minor_units("184467440737095516160", c("USD")), out_of_range);
        assert_eq!(parse_decimal_minor_units("10000000000000.01", c("USD")), out_of_range);
        assert_eq!(parse_decimal_minor_units("10000000000000.00", c("USD")), Ok(Amount::MAX));
        assert_eq!(parse_decimal_minor_units("0000000000000000000000000012.5", c("USD")), Ok(1250));
        // Grammar first: a bad character after an overflow is still not a decimal.
        assert_eq!(parse_decimal_minor_units("99999999999999999999x", c("USD")), Err(MoneyError::NotDecimal));
    }

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(-1).is_err());
        assert!(Amount::new(Amount::MAX + 1).is_err());
        assert_eq!(Amount::new(1999).unwrap().minor_units(), 1999);
        assert!(serde_json::from_str::<Amount>("-3").is_err());
    }
}

/// Properties over arbitrary input: the parser never panics, agrees with a slow
/// reference, and reads back what a formatter writes for every currency.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Writes `minor` units as a plain decimal with the currency's places.
    fn format(minor: i64, exponent: u8) -> String {
        let sign = if minor < 0 { "-" } else { "" };
        let digits = minor.unsigned_abs().to_string();
        let places = usize::from(exponent);
        if places == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = places + 1);
        let (whole, fraction) = padded.split_at(padded.len() - places);
        format!("{sign}{whole}.{fraction}")
    }

    /// A slow, obviously correct reading of the grammar, through big integers as text.
    fn reference(text: &str, currency: Currency) -> Result<i64, MoneyError> {
        let t = text.trim_ascii();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (whole, fraction) = digits.split_once('.').map_or((digits, None), |(w, f)| (w, Some(f)));
        let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_none_or(str::is_empty))
            || !numeric(whole)
            || fraction.is_some_and(|f| f.is_empty() || !numeric(f))
        {
            return Err(MoneyError::NotDecimal);
        }
        let fraction = fraction.unwrap_or("");
        let exponent = currency.exponent();
        if fraction.len() > usize::from(exponent) {
            return Err(MoneyError::TooPrecise { exponent });
        }
        let all = format!("{whole}{fraction:0<width$}", width = usize::from(exponent));
        let significant = all.trim_start_matches('0');
        match significant.parse::<i64>() {
            _ if significant.is_empty() => Ok(0),
            Ok(v) if v <= Amount::MAX => Ok(if negative { -v } else { v }),
            _ => Err(MoneyError::OutOfRange { max: Amount::MAX }),
        }
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(CURRENCIES.iter().map(|(code, _)| code.parse::<Currency>().unwrap()).collect::<Vec<_>>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn formatted_amounts_read_back_exactly(minor in -Amount::MAX..=Amount::MAX, currency in currency()) {
            let text = format(minor, currency.exponent());
            prop_assert_eq!(parse_decimal_minor_units(&text, currency), Ok(minor), "{}", text);
        }

        #[test]
        fn any_text_agrees_with_the_reference(text in "[ +\\-0-9.a-z]{0,24}", currency in currency()) {
            prop_assert_eq!(parse_decimal_minor_units(&text, currency), reference(&text, currency), "{:?}", text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..40), currency in currency()) {
            let _ = parse_decimal_ascii(&bytes, currency);
            let _ = Currency::from_ascii(&bytes);
        }
    }
}
