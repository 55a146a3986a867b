//! The sample events in `events/` for people and tests: placeholders (`${SETTLE_TOKEN}`,
//! `${CARD_TOKEN}`, `${PAYMENT_ID}`) filled in, since a JWT expires and ids are made
//! by earlier calls; and the environment a function binary needs to run on this machine
//! under `cargo lambda watch` (loopback services, development keys).

use crate::dev_keys;
use settle_shared::config::LOOPBACK_SERVICES;

/// Replaces each `${NAME}` given in `values`; fails naming any placeholder left over.
pub fn fill(template: &str, values: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    let left: Vec<&str> = text
        .match_indices("${")
        .filter_map(|(at, _)| text[at + 2..].split_once('}').map(|(name, _)| name))
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect();
    if !left.is_empty() {
        anyhow::bail!("no value for {} (see `settle event --help`)", left.join(", "));
    }
    Ok(text)
}

/// The environment of a function binary on this machine: the loopback services, the AWS
/// emulator, and the development keys `settle token` signs for.
pub fn local_lambda_vars() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> =
        LOOPBACK_SERVICES.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    vars.extend(
        [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("SETTLE_JWT_ALGORITHM", "ES256"),
            ("SETTLE_JWT_KEY", dev_keys::DEV_PUBLIC_KEY),
            ("SETTLE_CARD_FINGERPRINT_KEY", dev_keys::DEV_FINGERPRINT_KEY),
            ("SETTLE_WEBHOOK_MASTER_KEY", dev_keys::DEV_WEBHOOK_MASTER_KEY),
            ("SETTLE_GATEWAY_WEBHOOK_SECRET", dev_keys::DEV_GATEWAY_WEBHOOK_SECRET),
            ("SETTLE_WEBHOOK_ALLOW_PRIVATE", "true"),
            // The retry queue `settle up --real` creates in the emulator (moto's account id).
            ("SETTLE_RETRY_QUEUE_URL", "http://127.0.0.1:4566/123456789012/settle-webhook-retries"),
        ]
        .iter()
        .map(|(name, value)| (name.to_string(), value.trim_end().to_string())),
    );
    vars
}

/// [`local_lambda_vars`] as `NAME="value"` lines. PEM newlines are written as `\n` inside
/// double quotes, which dotenv readers (cargo lambda's `--env-file`) turn back into newlines.
pub fn local_lambda_env() -> String {
    local_lambda_vars().iter().map(|(name, value)| format!("{name}=\"{}\"\n", value.replace('\n', "\\n"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_or_named() {
        let text = r#"{"a":"Bearer ${SETTLE_TOKEN}","p":"/v1/payments/${PAYMENT_ID}","q":"${not one}"}"#;
        let filled = fill(text, &[("SETTLE_TOKEN", "t"), ("PAYMENT_ID", "pay_1")]).unwrap();
        assert_eq!(filled, r#"{"a":"Bearer t","p":"/v1/payments/pay_1","q":"${not one}"}"#);
        let err = fill(text, &[("SETTLE_TOKEN", "t")]).unwrap_err();
        assert!(err.to_string().contains("PAYMENT_ID"), "{err}");
    }

    #[test]
    fn the_env_file_holds_one_line_per_setting() {
        let env = local_lambda_env();
        assert!(env.lines().all(|l| l.contains("=\"") && l.ends_with('"')));
        assert!(env.contains("SETTLE_JWT_KEY=\"-----BEGIN PUBLIC KEY-----\\nMFkw"));
        assert!(env.contains("SETTLE_MONGODB_URI="));
    }
}
