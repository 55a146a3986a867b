//! Realistic settlement files of a given size, with a given share of bad rows and of
//! mismatches, for tests, benchmarks and `settle generate`. Deterministic per seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

/// A payment the file settles (ids, currency and captured minor units as stored).
#[derive(Debug, Clone)]
pub struct KnownPayment {
    pub id: String,
    pub merchant_id: String,
    pub currency: String,
    pub captured: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Bytes to write, at least (the last row completes the file).
    pub bytes: u64,
    /// Share of rows that are invalid (bad number, bad date, missing columns…).
    pub errors: f64,
    /// Share of valid rows that do not reconcile (wrong amount or unknown payment).
    pub mismatches: f64,
    pub seed: u64,
}

/// Counts of what was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub bad: u64,
    pub mismatched: u64,
    pub bytes: u64,
}

fn decimal(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

/// Writes a file of charges against `payments` (two-decimal currencies), and returns what
/// it wrote. With no payments, every row names an unknown one.
pub fn write_file(out: &mut impl Write, payments: &[KnownPayment], shape: Shape) -> std::io::Result<Written> {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let header = "settlement_id,payment_id,gateway_reference,merchant_id,type,amount,currency,fee,net,settled_at\n";
    out.write_all(header.as_bytes())?;
    let mut w = Written { bytes: header.len() as u64, ..Written::default() };
    let settlement = format!("stl_{:08x}", shape.seed);
    while w.bytes < shape.bytes {
        let n = w.rows;
        let gw = format!("gw_{:012}", n);
        let line = if rng.random_bool(shape.errors.clamp(0.0, 1.0)) {
            w.bad += 1;
            match n % 4 {
                0 => format!("{settlement},pay_x,{gw},m_1,charge,12.3x,USD,0.30,12.00,2026-11-27T06:00:00Z\n"),
                1 => format!("{settlement},pay_x,{gw},m_1,charge,12.30,USD,0.30,12.00,27/11/2026\n"),
                2 => format!("{settlement},pay_x,{gw},m_1,charge\n"),
                _ => format!("{settlement},pay_x,{gw},m_1,charge,12.30,USD,0.30,11.00,2026-11-27T06:00:00Z\n"),
            }
        } else {
            let mismatch = payments.is_empty() || rng.random_bool(shape.mismatches.clamp(0.0, 1.0));
            let (id, merchant, currency, mut amount) = match payments.get((n as usize) % payments.len().max(1)) {
                Some(p) => (p.id.clone(), p.merchant_id.clone(), p.currency.clone(), p.captured),
                None => (format!("pay_unknown{n}"), "m_1".to_string(), "USD".to_string(), 1000),
            };
            if mismatch {
                w.mismatched += 1;
                amount += 1;
            }
            let fee = amount * 29 / 1000 + 30;
            format!(
                "{settlement},{id},{gw},{merchant},charge,{},{currency},{},{},2026-11-27T{:02}:{:02}:00Z\n",
                decimal(amount),
                decimal(fee),
                decimal(amount - fee),
                (n / 60) % 24,
                n % 60
            )
        };
        out.write_all(line.as_bytes())?;
        w.bytes += line.len() as u64;
        w.rows += 1;
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_asked_size_and_shares_and_parse_back() {
        let payments = vec![KnownPayment {
            id: "pay_a".into(),
            merchant_id: "m_1".into(),
            currency: "USD".into(),
            captured: 2000,
        }];
        let mut buf = Vec::new();
        let shape = Shape { bytes: 200_000, errors: 0.1, mismatches: 0.2, seed: 7 };
        let w = write_file(&mut buf, &payments, shape).unwrap();
        assert_eq!(w.bytes, buf.len() as u64);
        assert!(w.bytes >= 200_000 && w.bytes < 200_200);
        let bad_share = w.bad as f64 / w.rows as f64;
        assert!((0.07..0.13).contains(&bad_share), "{bad_share}");
        // Every row parses or is rejected exactly as counted.
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&buf[..]);
        let mut record = csv::ByteRecord::new();
        let (mut n, mut rejected) = (0u64, 0u64);
        while reader.read_byte_record(&mut record).unwrap() {
            if n > 0 && crate::row::parse_row(&record, n).is_err() {
                rejected += 1;
            }
            n += 1;
        }
        assert_eq!((n - 1, rejected), (w.rows, w.bad));
        let mut again = Vec::new();
        write_file(&mut again, &payments, shape).unwrap();
        assert_eq!(again, buf, "deterministic per seed");
    }
}
