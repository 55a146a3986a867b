//! From CSV records to rows: the header check, then each record trimmed, typed and
//! validated into a [`SettlementRow`] or a [`Reject`] that says where and why.

use super::dates::parse_rfc3339_parts;
use super::text::RowText;
use super::{Reject, RowType, SettlementRow, HEADER};
use csv::ByteRecord;
use settle_shared::domain::money::{parse_decimal_ascii, Currency, MoneyError};

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

/// Trims like `str::trim` (spreadsheets pad with non-breaking spaces), on the fast ASCII
/// path unless a non-ASCII byte sits at either end.
fn trim(raw: &[u8]) -> &[u8] {
    // Most fields start and end with a visible ASCII character: nothing to trim.
    let visible = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
    if visible(raw.first()) && visible(raw.last()) {
        return raw;
    }
    let ascii = raw.trim_ascii();
    let non_ascii_edge = |b: Option<&u8>| b.is_some_and(|b| !b.is_ascii());
    if non_ascii_edge(ascii.first()) || non_ascii_edge(ascii.last()) {
        if let Ok(text) = std::str::from_utf8(ascii) {
            return text.trim().as_bytes();
        }
    }
    ascii
}

/// A record's fields, trimmed, and how many bytes trimming dropped; or the index of a
/// field longer than [`MAX_FIELD`].
fn trimmed_fields(record: &ByteRecord) -> Result<([&[u8]; HEADER.len()], usize), usize> {
    let mut fields: [&[u8]; HEADER.len()] = [b""; HEADER.len()];
    let mut trimmed = 0usize;
    for (i, (field, raw)) in fields.iter_mut().zip(record.iter()).enumerate() {
        if raw.len() > MAX_FIELD {
            return Err(i);
        }
        *field = trim(raw);
        trimmed += raw.len() - field.len();
    }
    Ok((fields, trimmed))
}

/// Parses and validates one record.
pub fn parse_row(record: &ByteRecord, record_number: u64) -> Result<SettlementRow, Reject> {
    let reject = |column: Option<usize>, reason: String| Reject {
        record: record_number,
        line: record.position().map_or(0, |p| p.line()),
        column,
        reason,
    };
    if record.len() != HEADER.len() {
        return Err(reject(None, format!("expected {} columns, found {}", HEADER.len(), record.len())));
    }
    let (fields, trimmed) = trimmed_fields(record)
        .map_err(|i| reject(Some(i + 1), format!("{}: longer than {MAX_FIELD} bytes", HEADER[i])))?;
    // The typed fields are parsed from bytes by ASCII grammars, so only the four text
    // fields need a UTF-8 check; a typed field that fails is told apart on this rare path.
    let invalid = |i: usize, why: &str| {
        let why = if std::str::from_utf8(fields[i]).is_err() { "invalid UTF-8" } else { why };
        reject(Some(i + 1), format!("{}: {why}", HEADER[i]))
    };
    let row_type = RowType::parse(fields[4]).ok_or_else(|| invalid(4, "expected charge, refund, fee or chargeback"))?;
    let currency = Currency::from_ascii(fields[6]).map_err(|_| invalid(6, "unknown currency"))?;
    let money = |i: usize| parse_decimal_ascii(fields[i], currency);
    let (amount, fee, net) = match (money(5), money(7), money(8)) {
        (Ok(amount), Ok(fee), Ok(net)) => (amount, fee, net),
        (amount, fee, net) => {
            let (i, why) = first_money_error([(5, amount), (7, fee), (8, net)], currency);
            return Err(invalid(i, &why));
        }
    };
    if amount.checked_sub(fee) != Some(net) {
        return Err(reject(Some(9), "net: does not equal amount - fee".to_string()));
    }
    let (settled_at_secs, settled_at_nanos) =
        parse_rfc3339_parts(fields[9]).ok_or_else(|| invalid(9, "bad date (expected RFC 3339)"))?;
    let (text, ends) = text_fields(record, &fields, trimmed)
        .map_err(|(i, why)| reject(Some(i + 1), format!("{}: {why}", HEADER[i])))?;
    Ok(SettlementRow { text, ends, row_type, amount, currency, fee, net, settled_at_secs, settled_at_nanos })
}

/// The first bad money field, in column order, and what is wrong with it; kept off the
/// hot path.
fn first_money_error(parsed: [(usize, Result<i64, MoneyError>); 3], currency: Currency) -> (usize, String) {
    let (i, e) = parsed.into_iter().find_map(|(i, r)| r.err().map(|e| (i, e))).unwrap_or((5, MoneyError::NotDecimal));
    let why = match e {
        MoneyError::TooPrecise { exponent } => format!("more than {exponent} decimal places for {}", currency.code()),
        MoneyError::OutOfRange { .. } => "out of range".to_string(),
        _ => "bad number".to_string(),
    };
    (i, why)
}

/// The four text fields as one [`RowText`] and where each ends in it; or the index of the
/// field at fault and why.
fn text_fields(
    record: &ByteRecord,
    fields: &[&[u8]; HEADER.len()],
    trimmed: usize,
) -> Result<(RowText, [u32; 4]), (usize, &'static str)> {
    // Fields are at most MAX_FIELD bytes, so four of them fit a u32.
    let mut ends = [0u32; 4];
    let mut length = 0;
    for (i, field) in fields[..4].iter().enumerate() {
        if field.is_empty() {
            return Err((i, "empty"));
        }
        length += field.len();
        ends[i] = length as u32;
    }
    // Usually nothing was trimmed, and a record keeps its fields back to back: the four
    // are checked and copied in place. Otherwise they are joined first.
    let joined: Vec<u8>;
    let raw = if trimmed == 0 {
        &record.as_slice()[..length]
    } else {
        joined = fields[..4].concat();
        &joined
    };
    // One UTF-8 check for the four; only a failure looks for the field at fault. Each field
    // must be valid alone, so the cuts must fall on character boundaries too.
    match std::str::from_utf8(raw) {
        Ok(text) if ends[..3].iter().all(|&end| text.is_char_boundary(end as usize)) => Ok((RowText::new(text), ends)),
        _ => {
            let at = (0..4).find(|&i| std::str::from_utf8(fields[i]).is_err()).unwrap_or(0);
            Err((at, "invalid UTF-8"))
        }
    }
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
        assert_eq!((second.row_type, second.amount, second.currency.code()), (RowType::Refund, -5, "JPY"));
        assert_eq!(
            (first.settlement_id(), first.payment_id(), first.gateway_reference(), first.merchant_id()),
            ("s1", "pay_1", "gw-1", "m_1")
        );
        assert_eq!(second.settled_at().to_rfc3339(), "2026-11-27T05:00:00+00:00");
    }

    #[test]
    fn long_text_fields_read_back_as_written() {
        let long = "x".repeat(MAX_FIELD);
        let text = format!("{HEAD}{long},pay_1,{long},m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n");
        let row = records(text.as_bytes())[0].1.clone().unwrap();
        assert!(matches!(row.text, RowText::Heap(_)), "{} bytes of text are kept on the heap", 2 * MAX_FIELD + 8);
        assert_eq!(
            (row.settlement_id(), row.payment_id(), row.gateway_reference()),
            (long.as_str(), "pay_1", long.as_str())
        );
        let short = records(format!("{HEAD} s1 ,pay_1,gw,m_1,fee,1,USD,0,1,2026-11-27T06:00:00Z\n").as_bytes())[0]
            .1
            .clone()
            .unwrap();
        assert!(matches!(short.text, RowText::Inline { .. }));
        assert_eq!((short.settlement_id(), short.merchant_id()), ("s1", "m_1"), "trimmed, then joined");
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
        // "é" is C3 A9: cut across two fields, each half is invalid though the bytes join up.
        invalid.extend_from_slice(b"s1,pay_\xc3,\xa9gw,m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n");
        invalid.extend_from_slice(b"s1,pay_1,gw,m_1,charge,1\xc3\xa9,USD,0,1,2026-11-27T06:00:00Z\n");
        invalid.extend_from_slice(b"s1,pay_1,gw,m_1,charge,1\xff,USD,0,1,2026-11-27T06:00:00Z\n");
        invalid.extend_from_slice("s1,pay_é,gw,m_1,charge,1,USD,0,1,2026-11-27T06:00:00Z\n".as_bytes());
        let results: Vec<_> = records(&invalid).into_iter().map(|(_, r)| r).collect();
        let reasons: Vec<_> =
            results[..4].iter().map(|r| r.clone().unwrap_err()).map(|r| (r.column, r.reason)).collect();
        assert_eq!(
            reasons,
            [
                (Some(2), "payment_id: invalid UTF-8".to_string()),
                (Some(2), "payment_id: invalid UTF-8".to_string()),
                (Some(6), "amount: bad number".to_string()),
                (Some(6), "amount: invalid UTF-8".to_string()),
            ]
        );
        assert_eq!(results[4].clone().unwrap().payment_id(), "pay_é");
    }

    #[test]
    fn wrong_headers_are_refused_whole() {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&b"id,amount\n"[..]);
        let mut record = ByteRecord::new();
        reader.read_byte_record(&mut record).unwrap();
        assert!(check_header(&record).unwrap_err().contains("settlement_id"));
    }
}

/// Properties over arbitrary records: validation never panics; a valid row written out
/// reads back to the same values.
#[cfg(test)]
mod properties {
    use super::*;
    use chrono::DateTime;
    use proptest::prelude::*;

    fn read(line: &[u8]) -> ByteRecord {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line);
        let mut record = ByteRecord::new();
        reader.read_byte_record(&mut record).unwrap();
        record
    }

    fn decimal(minor: i64, exponent: u8) -> String {
        let sign = if minor < 0 { "-" } else { "" };
        let scale = 10i64.pow(u32::from(exponent));
        let (whole, fraction) = (minor.unsigned_abs() / scale as u64, minor.unsigned_abs() % scale as u64);
        match exponent {
            0 => format!("{sign}{whole}"),
            e => format!("{sign}{whole}.{fraction:0width$}", width = usize::from(e)),
        }
    }

    prop_compose! {
        fn valid_row()(
            // Up to 48 characters each: rows on both sides of the inline text capacity.
            ids in prop::array::uniform4("[A-Za-z0-9_ée-]{1,48}"),
            kind in prop::sample::select(vec!["charge", "refund", "fee", "chargeback"]),
            code in prop::sample::select(settle_shared::domain::money::supported_currencies().collect::<Vec<_>>()),
            amount in -1_000_000_000i64..1_000_000_000,
            fee in 0i64..1_000_000,
            secs in -62_135_510_400i64..253_402_214_399,
            offset_minutes in -1439i32..1440,
        ) -> (Vec<String>, i64, i64, &'static str, i64) {
            let currency: Currency = code.parse().unwrap();
            let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let at = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
            let e = currency.exponent();
            let mut fields: Vec<String> = ids.to_vec();
            fields.extend([kind.to_string(), decimal(amount, e), code.to_string(), decimal(fee, e),
                decimal(amount - fee, e), at.to_rfc3339()]);
            (fields, amount, fee, code, secs)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_records_never_panic(fields in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..13)) {
            let mut record = ByteRecord::new();
            for f in &fields {
                record.push_field(f);
            }
            match parse_row(&record, 1) {
                Ok(row) => prop_assert_eq!(row.amount.checked_sub(row.fee), Some(row.net)),
                Err(reject) => prop_assert!(!reject.reason.is_empty()),
            }
        }

        #[test]
        fn valid_rows_read_back((fields, amount, fee, code, secs) in valid_row()) {
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(&fields).unwrap();
            let line = writer.into_inner().unwrap();
            let row = parse_row(&read(&line), 1).map_err(|r| TestCaseError::fail(format!("{r:?} {fields:?}")))?;
            prop_assert_eq!(
                (row.settlement_id(), row.payment_id(), row.gateway_reference(), row.merchant_id()),
                (fields[0].as_str(), fields[1].as_str(), fields[2].as_str(), fields[3].as_str())
            );
            prop_assert_eq!((row.row_type.as_str(), row.amount, row.fee, row.net), (fields[4].as_str(), amount, fee, amount - fee));
            prop_assert_eq!((row.currency.code(), row.settled_at().timestamp()), (code, secs));
        }

        #[test]
        fn padding_is_trimmed_and_a_bad_byte_names_its_column(
            (fields, amount, fee, _, _) in valid_row(),
            column in 0usize..10,
            pad in prop::sample::select(vec![" ", "\t", "\u{a0}", " \u{3000}"]),
            at in any::<prop::sample::Index>(),
        ) {
            let write = |fields: &[Vec<u8>]| {
                let mut writer = csv::Writer::from_writer(Vec::new());
                writer.write_record(fields).unwrap();
                writer.into_inner().unwrap()
            };
            let bytes: Vec<Vec<u8>> = fields.iter().map(|f| f.clone().into_bytes()).collect();
            // Padded with whitespace (ASCII or not) on both sides: the same row.
            let mut padded = bytes.clone();
            padded[column] = [pad.as_bytes(), &bytes[column], pad.as_bytes()].concat();
            let row = parse_row(&read(&write(&padded)), 1).map_err(|r| TestCaseError::fail(format!("{r:?}")))?;
            prop_assert_eq!((row.amount, row.fee, row.payment_id()), (amount, fee, fields[1].as_str()));
            // A byte that is not UTF-8, anywhere in one field: rejected, naming that column.
            let mut broken = bytes;
            let i = at.index(broken[column].len() + 1);
            broken[column].insert(i, 0xFF);
            let reject = parse_row(&read(&write(&broken)), 1).err();
            prop_assert_eq!(reject.as_ref().and_then(|r| r.column), Some(column + 1), "{:?}", reject);
        }
    }
}
