//! Where configuration values come from: the environment, and the secret values fetched
//! from Secrets Manager, which win for the settings that may hold credentials.

use super::ConfigError;
use crate::ports::secrets::SecretValues;
use crate::redact::Secret;

/// Where configuration values come from: a lookup function (the process environment in
/// production, a map in tests) plus the fetched secret values, if any.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub secrets: Option<&'a SecretValues>,
}

impl Sources<'_> {
    pub(super) fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub(super) fn secret(&self, name: &'static str) -> Option<Secret> {
        self.secrets
            .and_then(|s| s.get(name))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or_else(|| self.env(name))
            .map(Secret::new)
    }

    pub(super) fn parse<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.env(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: e.to_string() }),
        }
    }
}
