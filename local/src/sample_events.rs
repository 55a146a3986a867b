//! The sample events in `events/` for people and tests: placeholders (`${SETTLE_TOKEN}`,
//! `${CARD_TOKEN}`, `${PAYMENT_ID}`) filled in, since a JWT expires and ids are made
//! by earlier calls; and the environment a function binary needs to run on this machine
//! under `cargo lambda watch` (loopback services, development keys) or, as an `--env-vars`
//! file, under `sam local invoke`.

use crate::dev_keys;
use settle_shared::config::vars;
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
            (vars::JWT_ALGORITHM, "ES256"),
            (vars::JWT_KEY, dev_keys::DEV_PUBLIC_KEY),
            (vars::CARD_FINGERPRINT_KEY, dev_keys::DEV_FINGERPRINT_KEY),
            (vars::WEBHOOK_MASTER_KEY, dev_keys::DEV_WEBHOOK_MASTER_KEY),
            (vars::GATEWAY_WEBHOOK_SECRET, dev_keys::DEV_GATEWAY_WEBHOOK_SECRET),
            (vars::WEBHOOK_ALLOW_PRIVATE, "true"),
            // The retry queue `settle up --real` creates in the emulator (moto's account id).
            (vars::RETRY_QUEUE_URL, "http://127.0.0.1:4566/123456789012/settle-webhook-retries"),
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

/// The template's functions (logical ids) and what `sam local invoke` must set for each to
/// run on this machine's services. SAM overrides only the variables a function declares in
/// template.yaml, so each is declared there (empty where AWS takes it from a secret);
/// `scripts/sam-local-env.py` resolves this file with SAM's own code and fails on any it
/// would drop.
pub const SAM_FUNCTIONS: &[(&str, &[&str])] = &[
    (
        "PaymentFunction",
        &[
            vars::JWT_KEY,
            vars::JWT_ALGORITHM,
            vars::CARD_FINGERPRINT_KEY,
            vars::WEBHOOK_MASTER_KEY,
            vars::GATEWAY_WEBHOOK_SECRET,
            vars::RETRY_QUEUE_URL,
        ],
    ),
    ("NotifyFunction", &[vars::WEBHOOK_MASTER_KEY, vars::RETRY_QUEUE_URL, vars::WEBHOOK_ALLOW_PRIVATE]),
    ("CsvIngestFunction", &[vars::BUCKET]),
];

/// Set for every function of [`SAM_FUNCTIONS`]: the services, no Secrets Manager (the
/// values are given directly), and the AWS emulator under Settle's own name for it.
const SAM_COMMON: &[&str] =
    &[vars::MONGODB_URI, vars::REDIS_URL, vars::AMQP_URL, vars::SECRET_ID, settle_shared::aws::AWS_ENDPOINT_VAR];

/// The `--env-vars` file for `sam local invoke` (`settle sam-env`): per function, the
/// values it needs of those `settle invoke` runs with ([`crate::emulator::invoke_env`]),
/// for a container on the host's network (`--docker-network host`).
pub fn sam_env_file() -> serde_json::Value {
    let mut values: std::collections::BTreeMap<String, String> = crate::emulator::invoke_env().into_iter().collect();
    values.insert(vars::SECRET_ID.into(), String::new());
    values.entry(vars::BUCKET.into()).or_insert_with(|| "settle-settlements".into());
    let emulator = values.get("AWS_ENDPOINT_URL").cloned().unwrap_or_default();
    values.insert(settle_shared::aws::AWS_ENDPOINT_VAR.into(), emulator);
    let functions = SAM_FUNCTIONS.iter().map(|(function, own)| {
        let vars: serde_json::Map<String, serde_json::Value> = SAM_COMMON
            .iter()
            .chain(own.iter())
            .map(|name| (name.to_string(), serde_json::Value::String(values.get(*name).cloned().unwrap_or_default())))
            .collect();
        (function.to_string(), serde_json::Value::Object(vars))
    });
    serde_json::Value::Object(functions.collect())
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

    #[test]
    fn the_sam_env_file_gives_each_function_its_services_and_keys() {
        let file = sam_env_file();
        let payment = &file["PaymentFunction"];
        assert_eq!(payment["SETTLE_SECRET_ID"], "");
        assert!(payment["SETTLE_AWS_ENDPOINT_URL"].as_str().unwrap().starts_with("http://"));
        assert!(payment["SETTLE_JWT_KEY"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(file["NotifyFunction"].get("SETTLE_JWT_KEY").is_none(), "notify verifies no tokens");
        assert_eq!(file["CsvIngestFunction"]["SETTLE_BUCKET"], "settle-settlements");
        for (function, vars) in file.as_object().unwrap() {
            for (name, value) in vars.as_object().unwrap() {
                let value = value.as_str().unwrap();
                assert!(!value.is_empty() || name == "SETTLE_SECRET_ID", "{function}: {name} has no value");
            }
        }
    }
}
