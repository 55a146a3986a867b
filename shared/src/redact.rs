//! Secrets that never print: connection strings, keys and tokens are wrapped so that
//! `Debug` and `Display` mask them, and error text from drivers can be scrubbed of them.

use std::fmt;

/// A secret value. The only way to read it is [`Secret::expose`], which makes every
/// use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Removes every known secret, and every URL password, from a piece of text (typically a
/// driver's error message) before it is logged or shown on `/healthz`.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        let value = secret.expose();
        if value.len() >= 4 {
            out = out.replace(value, "***");
        }
    }
    scrub_url_passwords(&out)
}

/// `scheme://user:password@host` becomes `scheme://user:***@host`.
fn scrub_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', ' ', '?', '"', '\'']).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn scrub_removes_known_secrets_and_url_passwords() {
        let key = Secret::new("k3y-material");
        let text = "failed: amqps://admin:pa55@broker:5671/%2f and key k3y-material, redis://:pw@h:6379";
        let clean = scrub(text, &[&key]);
        assert!(!clean.contains("pa55") && !clean.contains("k3y-material") && !clean.contains(":pw@"), "{clean}");
        assert!(clean.contains("amqps://admin:***@broker:5671/%2f"), "{clean}");
        assert_eq!(scrub("no secrets at all", &[]), "no secrets at all");
    }
}
