//! The `HMAC_SECRET` the command line signs with: the one the engine checks, found the
//! way the engine finds it.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::{self, ConfigProblem, DevSecretError};

const KEY: &str = "HMAC_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Config(ConfigProblem),
    #[error(transparent)]
    DevFile(#[from] DevSecretError),
    #[error("no HMAC_SECRET to sign with: it is not in the environment, not in ./.env, and no engine started with ENV=dev has kept one in {} (DATA_DIR/dev-secrets/HMAC_SECRET); export the engine's secret as HMAC_SECRET or put it in ./.env", .dev_path.display())]
    Missing {
        /// Where an `ENV=dev` engine would have kept its generated secret.
        dev_path: PathBuf,
    },
}

/// Where the secret came from: said when the engine refuses a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `HMAC_SECRET` in the environment or `./.env`.
    Setting,
    /// The file an `ENV=dev` engine kept its generated secret in.
    DevFile(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Setting => write!(f, "HMAC_SECRET (from the environment or ./.env)"),
            Source::DevFile(path) => write!(f, "the dev secret in {}", path.display()),
        }
    }
}

/// A secret to sign with.
pub struct Secret {
    /// The key bytes.
    pub bytes: Vec<u8>,
    /// Where they came from.
    pub source: Source,
}

/// The secret from this process's environment and working directory.
pub fn find() -> Result<Secret, SecretError> {
    find_in(&config::process_vars().map_err(SecretError::Config)?)
}

/// `HMAC_SECRET` from `vars` (the environment over `./.env`), else the dev secret an
/// `ENV=dev` engine kept under `DATA_DIR`: what an engine started with the same
/// settings in the same directory signs with.
pub fn find_in(vars: &HashMap<String, String>) -> Result<Secret, SecretError> {
    if let Some(secret) = config::setting(vars, KEY) {
        return Ok(Secret {
            bytes: secret.as_bytes().to_vec(),
            source: Source::Setting,
        });
    }
    let data_dir = config::setting(vars, "DATA_DIR").unwrap_or(config::DATA_DIR_DEFAULT);
    let path = config::dev_secret_path(data_dir.as_ref(), KEY);
    match config::read_dev_secret(&path, KEY)? {
        Some(bytes) => Ok(Secret {
            bytes,
            source: Source::DevFile(path),
        }),
        None => Err(SecretError::Missing { dev_path: path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_setting_wins_then_the_dev_file_then_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("liveops-cli-secret-{}", std::process::id()));
        let data_dir = dir.to_str().unwrap();
        let missing = find_in(&vars(&[("DATA_DIR", data_dir)])).err().unwrap();
        let message = missing.to_string();
        for named in ["environment", ".env", "dev-secrets/HMAC_SECRET", data_dir] {
            assert!(message.contains(named), "{named} in {message}");
        }

        let path = config::dev_secret_path(dir.as_ref(), KEY);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "d".repeat(40) + "\n").unwrap();
        let dev = find_in(&vars(&[("DATA_DIR", data_dir), ("HMAC_SECRET", " ")])).unwrap();
        assert_eq!(dev.bytes, "d".repeat(40).as_bytes());
        assert_eq!(dev.source, Source::DevFile(path.clone()));

        let set = find_in(&vars(&[
            ("DATA_DIR", data_dir),
            ("HMAC_SECRET", " s3cret "),
        ]))
        .unwrap();
        assert_eq!(
            (set.bytes.as_slice(), set.source),
            (&b"s3cret"[..], Source::Setting)
        );

        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            find_in(&vars(&[("DATA_DIR", data_dir)])),
            Err(SecretError::DevFile(DevSecretError::TooShort { .. }))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
