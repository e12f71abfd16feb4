//! Secrets in the configuration: given inline (discouraged), by environment
//! variable, or by file, and read only when the gateway starts.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// A secret given inline (discouraged), by environment variable, or by file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The value itself.
    pub value: Option<String>,
    /// Name of an environment variable holding it.
    pub env: Option<String>,
    /// Path of a file holding it (trailing newline trimmed).
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// Whether any source is set.
    pub fn is_set(&self) -> bool {
        self.value.is_some() || self.env.is_some() || self.file.is_some()
    }

    /// Reads the secret; `key` names it in errors. `Ok(None)` when unset.
    pub fn load(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let count = [
            self.value.is_some(),
            self.env.is_some(),
            self.file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if count > 1 {
            return Err(ConfigError::Secret {
                key: key.into(),
                message: "set only one of `value`, `env` and `file`".into(),
            });
        }
        if let Some(v) = &self.value {
            return Ok(Some(v.clone()));
        }
        if let Some(name) = &self.env {
            return match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
                _ => Err(ConfigError::Secret {
                    key: key.into(),
                    message: format!("environment variable `{name}` is not set or empty"),
                }),
            };
        }
        if let Some(path) = &self.file {
            return match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
                Ok(_) => Err(ConfigError::Secret {
                    key: key.into(),
                    message: format!("file `{}` is empty", path.display()),
                }),
                Err(e) => Err(ConfigError::Secret {
                    key: key.into(),
                    message: format!("cannot read file `{}`: {e}", path.display()),
                }),
            };
        }
        Ok(None)
    }
}

impl From<latchkey_identity::SecretRef> for SecretSource {
    fn from(r: latchkey_identity::SecretRef) -> Self {
        Self {
            value: r.value,
            env: r.env,
            file: r.file,
        }
    }
}
