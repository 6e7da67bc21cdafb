//! The `[auth]` section and the per-table `access` / `owner_column` keys, and their validation.
//!
//! ```toml
//! [auth]
//! hmac_secret_env = "TABLESYNC_AUTH_SECRET"   # or hmac_secret = "…" (at least 32 bytes)
//! jwks_file = "keys.json"                    # optional: RS256/ES256 public keys
//! issuer = "https://myapp.example/"          # optional; when set, required and checked
//! audience = "https://myapp.example/"        # optional; when set, required and checked
//! leeway_s = 30
//! user_id_claim = "sub"
//!
//! [[tables]]
//! name = "TodoItem"
//! access = "authenticated"                   # or { read = "anonymous", default = "authenticated" }
//! owner_column = "userId"
//! ```
//!
//! Deny by default: with an `[auth]` section a table without `access` is `authenticated`; a
//! per-operation `access` table must name every operation or give a `default`. Without `[auth]`
//! every table is anonymous and `authenticated` or `owner_column` is refused.

use std::fmt;
use std::path::PathBuf;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::TableOperation;

/// The shortest HMAC secret accepted, in bytes (after decoding `hmac_secret_encoding`). The
/// official Node server's default secret is `"0000"`; anything that short can be brute-forced.
pub const HMAC_SECRET_BYTES_MIN: usize = 32;

/// The largest `leeway_s` accepted, in seconds.
pub const LEEWAY_S_MAX: u64 = 300;

/// `[auth]`: how tokens are verified and what identifies a user.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC secret itself (HS256/384/512). Prefer [`AuthConfig::hmac_secret_env`]: a secret
    /// in a config file ends up in backups and repositories.
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// The environment variable holding the HMAC secret (read at start).
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// How the secret's text is turned into key bytes: `utf8` (default: the text's bytes), `hex`
    /// (App Service's `WEBSITE_AUTH_SIGNING_KEY`) or `base64`.
    #[serde(default)]
    pub hmac_secret_encoding: SecretEncoding,
    /// A JWKS file (`{"keys": [...]}`) of RSA and EC public keys for RS256/ES256 tokens.
    /// A relative path is relative to the config file's directory.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud` (a string, or an array containing it).
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (0..=300).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// The claim whose string value is the user id (`sub`, `stable_sid`, `oid`, …).
    #[serde(default = "default_user_id_claim")]
    pub user_id_claim: String,
    /// Accepted signature algorithms. Default: `HS256` when a secret is configured, plus
    /// `RS256` and `ES256` when a JWKS file is. `none` is not a value this accepts.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    /// Request headers a token is read from, in order of precedence. `authorization` must be
    /// `Bearer <token>`; other headers carry the bare token (an optional `Bearer ` is removed).
    #[serde(default = "default_token_headers")]
    pub token_headers: Vec<String>,
    /// Longest token accepted, in bytes; longer ones are refused before any parsing.
    #[serde(default = "default_token_bytes_max")]
    pub token_bytes_max: usize,
    /// Longest user id accepted, in bytes (UTF-8).
    #[serde(default = "default_user_id_bytes_max")]
    pub user_id_bytes_max: usize,
    /// Check `nbf` (not before) when a token has one.
    #[serde(default = "default_true")]
    pub validate_nbf: bool,
}

fn default_leeway_s() -> u64 {
    30
}
fn default_user_id_claim() -> String {
    "sub".to_owned()
}
fn default_token_headers() -> Vec<String> {
    vec!["x-zumo-auth".to_owned(), "authorization".to_owned()]
}
fn default_token_bytes_max() -> usize {
    8192
}
fn default_user_id_bytes_max() -> usize {
    255
}
fn default_true() -> bool {
    true
}

impl AuthConfig {
    /// An `[auth]` section with this inline secret and every other key at its default (tests,
    /// examples).
    pub fn with_secret(secret: impl Into<String>) -> Self {
        AuthConfig {
            hmac_secret: Some(Secret(secret.into())),
            hmac_secret_env: None,
            hmac_secret_encoding: SecretEncoding::Utf8,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_s: default_leeway_s(),
            user_id_claim: default_user_id_claim(),
            algorithms: None,
            token_headers: default_token_headers(),
            token_bytes_max: default_token_bytes_max(),
            user_id_bytes_max: default_user_id_bytes_max(),
            validate_nbf: true,
        }
    }

    /// Whether an HMAC secret is configured (inline or through the environment).
    pub fn has_secret(&self) -> bool {
        self.hmac_secret.is_some() || self.hmac_secret_env.is_some()
    }

    /// The accepted algorithms: [`AuthConfig::algorithms`] or its default.
    pub fn allowed_algorithms(&self) -> Vec<Algorithm> {
        match &self.algorithms {
            Some(list) => list.clone(),
            None => {
                let mut out = Vec::new();
                if self.has_secret() {
                    out.push(Algorithm::HS256);
                }
                if self.jwks_file.is_some() {
                    out.extend([Algorithm::RS256, Algorithm::ES256]);
                }
                out
            }
        }
    }

    /// Every rule that needs no file or environment (those are checked when the server loads
    /// the keys, `Authenticator::load`).
    pub fn validate(&self) -> Result<(), String> {
        if self.hmac_secret.is_some() && self.hmac_secret_env.is_some() {
            return Err("auth: give hmac_secret or hmac_secret_env, not both".into());
        }
        if !self.has_secret() && self.jwks_file.is_none() {
            return Err(
                "auth: no key to verify tokens with: set hmac_secret_env (or hmac_secret) and/or jwks_file"
                    .into(),
            );
        }
        if let Some(env) = &self.hmac_secret_env {
            if env.is_empty() || env.contains('=') || env.contains('\0') {
                return Err(format!(
                    "auth.hmac_secret_env: '{env}' is not an environment variable name"
                ));
            }
        }
        if let Some(secret) = &self.hmac_secret {
            let bytes = self.hmac_secret_encoding.decode(&secret.0)?;
            check_secret_length(bytes.len(), "auth.hmac_secret")?;
        }
        if self.leeway_s > LEEWAY_S_MAX {
            return Err(format!(
                "auth.leeway_s must be at most {LEEWAY_S_MAX} seconds"
            ));
        }
        if self.user_id_claim.is_empty() {
            return Err("auth.user_id_claim must name a claim".into());
        }
        for (name, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if value.as_deref() == Some("") {
                return Err(format!(
                    "auth.{name} must not be empty (leave it out instead)"
                ));
            }
        }
        if self.token_headers.is_empty() {
            return Err("auth.token_headers must name at least one header".into());
        }
        for header in &self.token_headers {
            let valid = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(format!(
                    "auth.token_headers: '{header}' is not a header name"
                ));
            }
        }
        if self.token_bytes_max == 0 || self.user_id_bytes_max == 0 {
            return Err("auth.token_bytes_max and auth.user_id_bytes_max must be positive".into());
        }
        let algorithms = self.allowed_algorithms();
        if algorithms.is_empty() {
            return Err("auth.algorithms must list at least one algorithm".into());
        }
        for alg in algorithms {
            match alg.family() {
                AlgorithmFamily::Hmac if !self.has_secret() => {
                    return Err(format!(
                        "auth.algorithms: {alg:?} needs an HMAC secret (hmac_secret_env or hmac_secret)"
                    ))
                }
                AlgorithmFamily::Rsa | AlgorithmFamily::Ec if self.jwks_file.is_none() => {
                    return Err(format!("auth.algorithms: {alg:?} needs a jwks_file"))
                }
                AlgorithmFamily::Ed => {
                    return Err(format!(
                        "auth.algorithms: {alg:?} is not supported (HS*, RS*, PS*, ES256, ES384)"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Refuse a secret shorter than [`HMAC_SECRET_BYTES_MIN`].
pub fn check_secret_length(bytes: usize, what: &str) -> Result<(), String> {
    if bytes < HMAC_SECRET_BYTES_MIN {
        return Err(format!(
            "{what} is {bytes} bytes long; at least {HMAC_SECRET_BYTES_MIN} bytes are required"
        ));
    }
    Ok(())
}

/// A secret from the config file; its `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a secret's text becomes key bytes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    /// The text's UTF-8 bytes.
    #[default]
    Utf8,
    /// Hexadecimal digits (App Service's `WEBSITE_AUTH_SIGNING_KEY`).
    Hex,
    /// Standard base64 (with or without padding).
    Base64,
}

impl SecretEncoding {
    /// The key bytes of `text`. The error never contains the text.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, String> {
        match self {
            SecretEncoding::Utf8 => Ok(text.as_bytes().to_vec()),
            SecretEncoding::Hex => {
                let digits = text.trim().as_bytes();
                if !digits.len().is_multiple_of(2) {
                    return Err("the HMAC secret is not valid hex (odd length)".into());
                }
                digits
                    .chunks(2)
                    .map(|pair| {
                        std::str::from_utf8(pair)
                            .ok()
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or_else(|| "the HMAC secret is not valid hex".to_owned())
                    })
                    .collect()
            }
            SecretEncoding::Base64 => {
                use base64::Engine as _;
                let text = text.trim().trim_end_matches('=');
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(text)
                    .map_err(|_| "the HMAC secret is not valid base64".to_owned())
            }
        }
    }
}

/// Who may run an operation on a table.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Anyone (a presented token must still be valid).
    Anonymous,
    /// Only callers with a valid token; others get 401.
    Authenticated,
    /// Nobody: 405, like an operation left out of `operations`.
    Disabled,
}

impl AccessLevel {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            AccessLevel::Anonymous => "anonymous",
            AccessLevel::Authenticated => "authenticated",
            AccessLevel::Disabled => "disabled",
        }
    }
}

/// A table's `access`: one level for every operation, or one per operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// `access = "authenticated"`.
    All(AccessLevel),
    /// `access = { read = "anonymous", default = "authenticated" }`: operations not named take
    /// `default`; without `default` every operation must be named (deny by default means no
    /// silent fallback).
    PerOperation {
        /// `read`, `insert`, `update`, `delete`, `undelete`, in that order.
        operations: [Option<AccessLevel>; 5],
        /// `default`.
        default: Option<AccessLevel>,
    },
}

impl Access {
    /// The level of `op`, or None when the per-operation form neither names it nor has a default.
    pub fn level(&self, op: TableOperation) -> Option<AccessLevel> {
        match self {
            Access::All(level) => Some(*level),
            Access::PerOperation {
                operations,
                default,
            } => operations[op_index(op)].or(*default),
        }
    }
}

fn op_index(op: TableOperation) -> usize {
    match op {
        TableOperation::Read => 0,
        TableOperation::Insert => 1,
        TableOperation::Update => 2,
        TableOperation::Delete => 3,
        TableOperation::Undelete => 4,
    }
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AccessVisitor;
        impl<'de> Visitor<'de> for AccessVisitor {
            type Value = Access;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"anonymous\", \"authenticated\", \"disabled\", or a table of operation = level \
                     (read, insert, update, delete, undelete, default)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Access, E> {
                parse_level(v).map(Access::All).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Access, A::Error> {
                let mut operations = [None; 5];
                let mut default = None;
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    let level = parse_level(&value).map_err(de::Error::custom)?;
                    let slot = match key.as_str() {
                        "read" => &mut operations[0],
                        "insert" => &mut operations[1],
                        "update" => &mut operations[2],
                        "delete" => &mut operations[3],
                        "undelete" => &mut operations[4],
                        "default" => &mut default,
                        other => {
                            return Err(de::Error::custom(format!(
                                "access: unknown operation '{other}' (read, insert, update, delete, undelete, default)"
                            )))
                        }
                    };
                    *slot = Some(level);
                }
                Ok(Access::PerOperation {
                    operations,
                    default,
                })
            }
        }
        d.deserialize_any(AccessVisitor)
    }
}

fn parse_level(text: &str) -> Result<AccessLevel, String> {
    match text {
        "anonymous" => Ok(AccessLevel::Anonymous),
        "authenticated" => Ok(AccessLevel::Authenticated),
        "disabled" => Ok(AccessLevel::Disabled),
        other => Err(format!(
            "access: unknown level '{other}' (anonymous, authenticated, disabled)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode_and_never_print() {
        assert_eq!(SecretEncoding::Hex.decode("0aFF").unwrap(), vec![10, 255]);
        assert!(SecretEncoding::Hex.decode("0g").is_err());
        assert!(SecretEncoding::Hex.decode("abc").is_err());
        assert_eq!(SecretEncoding::Base64.decode("AAE=").unwrap(), vec![0, 1]);
        assert_eq!(SecretEncoding::Utf8.decode("ab").unwrap(), b"ab".to_vec());
        let shown = format!("{:?}", AuthConfig::with_secret("super-secret-value"));
        assert!(!shown.contains("super-secret-value"), "{shown}");
    }

    #[test]
    fn default_algorithms_follow_the_keys() {
        let mut auth = AuthConfig::with_secret("x".repeat(32));
        assert_eq!(auth.allowed_algorithms(), vec![Algorithm::HS256]);
        auth.jwks_file = Some("k.json".into());
        assert_eq!(
            auth.allowed_algorithms(),
            vec![Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]
        );
        auth.hmac_secret = None;
        assert_eq!(
            auth.allowed_algorithms(),
            vec![Algorithm::RS256, Algorithm::ES256]
        );
        auth.algorithms = Some(vec![Algorithm::HS256]);
        assert!(auth
            .validate()
            .unwrap_err()
            .contains("needs an HMAC secret"));
    }

    #[test]
    fn access_levels_per_operation() {
        let all = Access::All(AccessLevel::Disabled);
        assert_eq!(all.level(TableOperation::Read), Some(AccessLevel::Disabled));
        let per = Access::PerOperation {
            operations: [Some(AccessLevel::Anonymous), None, None, None, None],
            default: None,
        };
        assert_eq!(
            per.level(TableOperation::Read),
            Some(AccessLevel::Anonymous)
        );
        assert_eq!(per.level(TableOperation::Insert), None);
    }
}
