//! One settlement row: parsed from a CSV record and validated, or rejected with its
//! position (record, line, column) and a reason. Amounts are decimal strings converted
//! exactly to minor units by the currency's exponent, never through floats.

use chrono::{DateTime, Utc};
use csv::ByteRecord;
use serde::Serialize;
use settle_shared::domain::money::{parse_decimal_minor_units, Currency, MoneyError};

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
    fn parse(text: &str) -> Option<RowType> {
        match text {
            "charge" => Some(RowType::Charge),
            "refund" => Some(RowType::Refund),
            "fee" => Some(RowType::Fee),
            "chargeback" => Some(RowType::Chargeback),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettlementRow {
    pub settlement_id: String,
    pub payment_id: String,
    pub gateway_reference: String,
    pub merchant_id: String,
    pub row_type: RowType,
    /// Minor units; signed (a refund or chargeback may be written negative).
    pub amount: i64,
    pub currency: String,
    pub fee: i64,
    pub net: i64,
    pub settled_at: DateTime<Utc>,
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

/// Checks the header record (a UTF-8 BOM before the first name is tolerated).
pub fn check_header(header: &ByteRecord) -> Result<(), String> {
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = if i == 0 { f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f) } else { f };
            String::from_utf8_lossy(f).trim().to_string()
        })
        .collect();
    if names.iter().map(String::as_str).eq(HEADER.iter().copied()) {
        Ok(())
    } else {
        Err(format!("header must be exactly: {}", HEADER.join(",")))
    }
}

/// Longest accepted field: anything longer is a broken or hostile file.
pub const MAX_FIELD: usize = 256;

/// Parses and validates one record.
pub fn parse_row(record: &ByteRecord, record_number: u64) -> Result<SettlementRow, Reject> {
    let line = record.position().map_or(0, |p| p.line());
    let reject = |column: Option<usize>, reason: String| Reject { record: record_number, line, column, reason };
    if record.len() != HEADER.len() {
        return Err(reject(None, format!("expected {} columns, found {}", HEADER.len(), record.len())));
    }
    let mut fields: Vec<&str> = Vec::with_capacity(HEADER.len());
    for (i, raw) in record.iter().enumerate() {
        if raw.len() > MAX_FIELD {
            return Err(reject(Some(i + 1), format!("{}: longer than {MAX_FIELD} bytes", HEADER[i])));
        }
        let text =
            std::str::from_utf8(raw).map_err(|_| reject(Some(i + 1), format!("{}: invalid UTF-8", HEADER[i])))?;
        fields.push(text.trim());
    }
    let text_field = |i: usize| -> Result<String, Reject> {
        if fields[i].is_empty() {
            Err(reject(Some(i + 1), format!("{}: empty", HEADER[i])))
        } else {
            Ok(fields[i].to_string())
        }
    };
    let row_type = RowType::parse(fields[4])
        .ok_or_else(|| reject(Some(5), "type: expected charge, refund, fee or chargeback".to_string()))?;
    let currency: Currency =
        fields[6].parse().map_err(|_| reject(Some(7), "currency: unknown currency".to_string()))?;
    let money = |i: usize| -> Result<i64, Reject> {
        parse_decimal_minor_units(fields[i], currency).map_err(|e| {
            let why = match e {
                MoneyError::TooPrecise { exponent } => {
                    format!("more than {exponent} decimal places for {}", currency.code())
                }
                MoneyError::OutOfRange { .. } => "out of range".to_string(),
                _ => "bad number".to_string(),
            };
            reject(Some(i + 1), format!("{}: {why}", HEADER[i]))
        })
    };
    let (amount, fee, net) = (money(5)?, money(7)?, money(8)?);
    if amount.checked_sub(fee) != Some(net) {
        return Err(reject(Some(9), "net: does not equal amount - fee".to_string()));
    }
    let settled_at = DateTime::parse_from_rfc3339(fields[9])
        .map_err(|_| reject(Some(10), "settled_at: bad date (expected RFC 3339)".to_string()))?
        .with_timezone(&Utc);
    Ok(SettlementRow {
        settlement_id: text_field(0)?,
        payment_id: text_field(1)?,
        gateway_reference: text_field(2)?,
        merchant_id: text_field(3)?,
        row_type,
        amount,
        currency: currency.code().to_string(),
        fee,
        net,
        settled_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &[u8]) -> Vec<(u64, Result<SettlementRow, Reject>)> {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
        let mut out = Vec::new();
        let mut record = ByteRecord::new();
        let mut n = 0;
        while reader.read_byte_record(&mut record).unwrap() {
            if n == 0 {
                check_header(&record).unwrap();
            } else {
                out.push((n, parse_row(&record, n)));
            }
            n += 1;
        }
        out
    }

    const HEAD: &str =
        "settlement_id,payment_id,gateway_reference,merchant_id,type,amount,currency,fee,net,settled_at\n";

    #[test]
    fn good_rows_convert_exactly() {
        let text = format!("\u{feff}{HEAD}s1,pay_1,gw-1,m_1,charge,20.00,USD,0.59,19.41,2026-11-27T06:00:00Z\r\ns1,pay_2,gw-2,m_1,refund,-5,JPY,0,-5,2026-11-27T06:00:00+01:00\n");
        let rows = records(text.as_bytes());
        let first = rows[0].1.clone().unwrap();
        assert_eq!((first.amount, first.fee, first.net), (2000, 59, 1941));
        let second = rows[1].1.clone().unwrap();
        assert_eq!((second.row_type, second.amount, second.currency.as_str()), (RowType::Refund, -5, "JPY"));
        assert_eq!(second.settled_at.to_rfc3339(), "2026-11-27T05:00:00+00:00");
    }

    #[test]
    fn bad_rows_are_rejected_with_line_and_column() {
        let text = format!(
            "{HEAD}s1,pay_1,gw,m_1,charge,20.00,USD,0.59,19.40,2026-11-27T06:00:00Z\n\
             s1,pay_1,gw,m_1,charge,2O.00,USD,0,20.00,2026-11-27T06:00:00Z\n\
             s1,pay_1,gw,m_1,charge,20.00,XXX,0,20.00,2026-11-27T06:00:00Z\n\
             s1,pay_1,gw,m_1,charge,20.001,USD,0,20.00,2026-11-27T06:00:00Z\n\
             s1,pay_1,gw,m_1,charge,20.00,USD,0,20.00,yesterday\n\
             s1,pay_1,gw,m_1,charge\n\
             s1,pay_1,gw,m_1,bonus,1,USD,0,1,2026-11-27T06:00:00Z\n\
             s1,,gw,m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n"
        );
        let rejects: Vec<Reject> = records(text.as_bytes()).into_iter().map(|(_, r)| r.unwrap_err()).collect();
        let summary: Vec<(u64, Option<usize>)> = rejects.iter().map(|r| (r.line, r.column)).collect();
        assert_eq!(
            summary,
            [
                (2, Some(9)),
                (3, Some(6)),
                (4, Some(7)),
                (5, Some(6)),
                (6, Some(10)),
                (7, None),
                (8, Some(5)),
                (9, Some(2))
            ]
        );
        assert!(rejects[0].reason.contains("net"));
        assert!(rejects[3].reason.contains("decimal places"));
        let mut invalid = HEAD.as_bytes().to_vec();
        invalid.extend_from_slice(b"s1,pay_\xff,gw,m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n");
        let r = records(&invalid).remove(0).1.unwrap_err();
        assert_eq!((r.column, r.reason.as_str()), (Some(2), "payment_id: invalid UTF-8"));
    }

    #[test]
    fn wrong_headers_are_refused_whole() {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&b"id,amount\n"[..]);
        let mut record = ByteRecord::new();
        reader.read_byte_record(&mut record).unwrap();
        assert!(check_header(&record).unwrap_err().contains("settlement_id"));
    }
}
