//! Secrets contract: memory model and Secrets Manager (emulator).

use crate::helpers;
use settle_shared::ports::secrets::*;

/// A source holding `<prefix>/good` (a JSON object) and `<prefix>/bad` (not one).
struct Fixture {
    source: SecretsSource,
    prefix: String,
}

const GOOD: &str = r#"{"SETTLE_JWT_KEY":"-----BEGIN PUBLIC KEY-----x","SETTLE_AMQP_URL":"amqps://u:p@b:5671/%2f"}"#;
const BAD: &str = r#"["SETTLE_JWT_KEY", "hunter2"]"#;

async fn memory_secrets() -> Fixture {
    let prefix = helpers::unique("settle");
    let memory = MemorySecrets::new();
    memory.put(&format!("{prefix}/good"), GOOD);
    memory.put(&format!("{prefix}/bad"), BAD);
    Fixture { source: SecretsSource::Memory(memory), prefix }
}

async fn secretsmanager_secrets() -> Fixture {
    let prefix = helpers::unique("settle");
    let client = aws_sdk_secretsmanager::Client::new(&helpers::sdk().await);
    for (name, value) in [("good", GOOD), ("bad", BAD)] {
        if let Err(e) = client.create_secret().name(format!("{prefix}/{name}")).secret_string(value).send().await {
            helpers::unreachable("Secrets Manager (emulator)", aws_sdk_secretsmanager::error::DisplayErrorContext(e));
        }
    }
    Fixture { source: SecretsSource::SecretsManager(client), prefix }
}

async fn json_secrets_are_read_and_faults_named(f: Fixture) {
    let values = f.source.get_json(&format!("{}/good", f.prefix)).await.unwrap();
    assert_eq!(values["SETTLE_AMQP_URL"], "amqps://u:p@b:5671/%2f");
    let missing = f.source.get_json(&format!("{}/absent", f.prefix)).await.unwrap_err();
    assert!(matches!(missing, SecretsError::NotFound(_)), "{missing:?}");
    let bad = f.source.get_json(&format!("{}/bad", f.prefix)).await.unwrap_err();
    assert!(matches!(bad, SecretsError::Malformed { .. }), "{bad:?}");
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
}

async fn several_secrets_merge_later_ones_winning(f: Fixture) {
    let (good, absent) = (format!("{}/good", f.prefix), format!("{}/absent", f.prefix));
    let ttl = std::time::Duration::from_secs(60);
    let merged = settle_shared::config::fetch_merged_secrets(&f.source, &[&good, &good], ttl).await.unwrap();
    assert_eq!(merged.len(), 2);
    let err = settle_shared::config::fetch_merged_secrets(&f.source, &[&good, &absent], ttl).await.unwrap_err();
    assert!(err.to_string().contains(&absent), "{err}");
    assert!(!err.to_string().contains("amqps://u:p"), "{err}");
}

crate::contract_tests!(
    memory: memory_secrets,
    real: secretsmanager_secrets,
    contracts: [json_secrets_are_read_and_faults_named, several_secrets_merge_later_ones_winning]
);
