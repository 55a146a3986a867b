//! TLS set-up shared by every client: one rustls crypto provider for the process, and an
//! optional extra CA bundle for private CAs (Amazon MQ, ElastiCache and Atlas use public
//! roots; a self-hosted broker may not).

use std::path::Path;
use std::sync::Once;

/// Installs aws-lc-rs as the process-wide rustls provider. Must run before any TLS client
/// is built: with more than one provider compiled in, rustls refuses to choose and some
/// clients (redis) panic at their first TLS connection. Idempotent.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is just as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// Reads the extra CA bundle (PEM). Errors name the file, never its content.
pub fn read_extra_ca(path: &Path) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("SETTLE_EXTRA_CA_FILE {}: {e}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("SETTLE_EXTRA_CA_FILE {}: no PEM certificate in the file", path.display());
    }
    Ok(pem)
}
