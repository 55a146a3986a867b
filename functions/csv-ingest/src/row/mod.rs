//! One settlement row: parsed from a CSV record and validated, or rejected with its
//! position (record, line, column) and a reason. Amounts are decimal strings converted
//! exactly to minor units by the currency's exponent, never through floats.

mod dates;
mod parse;
mod text;

pub use dates::parse_rfc3339;
pub use parse::{check_header, parse_row, MAX_FIELD};

use chrono::{DateTime, Utc};
use serde::Serialize;
use settle_shared::domain::money::Currency;
use text::RowText;

/// The columns, in order. A file whose header differs is rejected whole.
pub const HEADER: [&str; 10] = [
    "settlement_id",
    "payment_id",
    "gateway_reference",
    "merchant_id",
    "type",
    "amount",
    "currency",
    "fee",
    "net",
    "settled_at",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RowType {
    Charge,
    Refund,
    Fee,
    Chargeback,
}

impl RowType {
    fn parse(text: &[u8]) -> Option<RowType> {
        match text {
            b"charge" => Some(RowType::Charge),
            b"refund" => Some(RowType::Refund),
            b"fee" => Some(RowType::Fee),
            b"chargeback" => Some(RowType::Chargeback),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RowType::Charge => "charge",
            RowType::Refund => "refund",
            RowType::Fee => "fee",
            RowType::Chargeback => "chargeback",
        }
    }
}

/// A valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRow {
    /// settlement_id, payment_id, gateway_reference and merchant_id, back to back.
    text: RowText,
    /// Where each of the four text fields ends in `text`.
    ends: [u32; 4],
    pub row_type: RowType,
    /// Minor units; signed (a refund or chargeback may be written negative).
    pub amount: i64,
    pub currency: Currency,
    pub fee: i64,
    pub net: i64,
    /// `settled_at` as Unix time: building a `DateTime` per row cost more than parsing it.
    settled_at_secs: i64,
    settled_at_nanos: u32,
}

impl SettlementRow {
    fn text_field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text.as_str()[start..self.ends[i] as usize]
    }

    pub fn settlement_id(&self) -> &str {
        self.text_field(0)
    }

    pub fn payment_id(&self) -> &str {
        self.text_field(1)
    }

    pub fn gateway_reference(&self) -> &str {
        self.text_field(2)
    }

    pub fn merchant_id(&self) -> &str {
        self.text_field(3)
    }

    pub fn settled_at(&self) -> DateTime<Utc> {
        // In range by construction: the parts came from a valid calendar date.
        DateTime::from_timestamp(self.settled_at_secs, self.settled_at_nanos).unwrap_or_default()
    }
}

impl Serialize for SettlementRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SettlementRow", 10)?;
        s.serialize_field("settlement_id", self.settlement_id())?;
        s.serialize_field("payment_id", self.payment_id())?;
        s.serialize_field("gateway_reference", self.gateway_reference())?;
        s.serialize_field("merchant_id", self.merchant_id())?;
        s.serialize_field("row_type", &self.row_type)?;
        s.serialize_field("amount", &self.amount)?;
        s.serialize_field("currency", &self.currency)?;
        s.serialize_field("fee", &self.fee)?;
        s.serialize_field("net", &self.net)?;
        s.serialize_field("settled_at", &self.settled_at())?;
        s.end()
    }
}

/// Where a rejected row was, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    /// 1-based record number (the header is record 0).
    pub record: u64,
    /// 1-based line where the record starts.
    pub line: u64,
    /// 1-based column of the faulty field, when one field is at fault.
    pub column: Option<usize>,
    pub reason: String,
}
