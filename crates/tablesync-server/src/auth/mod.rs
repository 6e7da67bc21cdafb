//! Authentication: the only part of the server that reads tokens.
//!
//! The HTTP layer hands [`Authenticator::authenticate`] the values of the configured token
//! headers (`X-ZUMO-AUTH`, then `Authorization: Bearer`); the answer is an [`Identity`] — a
//! verified [`Principal`] or [`Identity::Anonymous`] — or an [`AuthError`] (401). Nothing else in
//! the server sees a token: `App` operations take the `Identity` as a plain value, turn it into a
//! row `Scope` for the store, and the store ANDs the owner predicate into
//! its SQL. Tokens in the query string are never read.
//!
//! * `config`: the `[auth]` section and the tables' `access` / `owner_column` keys.
//! * `keys`: the HMAC secret and the JWKS public keys; which key a token's header selects.
//! * `token`: the pure rules (which header value is the token; signature, `iss`, `aud` through
//!   `jsonwebtoken`; `exp`/`nbf` with the leeway against the injected [`Clock`]; the user id).
//! * `clock`: [`Clock`], [`SystemClock`], [`FixedClock`].
//!
//! No crypto is written here, and no token is ever logged: a refusal logs its reason only.

pub mod clock;
pub mod config;
mod keys;
mod token;

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{Map, Value};

pub use clock::{Clock, FixedClock, SystemClock};
pub use config::{Access, AccessLevel, AuthConfig, Secret, SecretEncoding};
use keys::KeySet;
pub use token::Presented;
use token::Rules;

/// A caller whose token verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// The value of `user_id_claim` (`sub` by default): the owner of per-user rows.
    pub user_id: String,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

/// Who is calling: what every `App` operation is given.
#[derive(Clone, Debug, PartialEq)]
pub enum Identity {
    /// No token was presented.
    Anonymous,
    /// A valid token was presented.
    User(Principal),
}

impl Identity {
    /// A user with this id and no other claims (tests, batch sub-requests).
    pub fn user(user_id: impl Into<String>) -> Identity {
        Identity::User(Principal {
            user_id: user_id.into(),
            claims: Map::new(),
        })
    }

    /// The principal, when there is one.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Identity::Anonymous => None,
            Identity::User(p) => Some(p),
        }
    }
}

/// A token was presented but refused. `reason` is for the log only: clients get a generic 401.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("token refused: {reason}")]
pub struct AuthError {
    /// Why (never contains the token).
    pub reason: String,
}

/// Verifies tokens: the keys, the rules and the clock, loaded once at start.
pub struct Authenticator {
    /// Lower-case header names, in precedence order.
    headers: Vec<String>,
    keys: KeySet,
    rules: Rules,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Load the keys of `[auth]`: the secret (inline, or from the environment through `env`),
    /// at least [`config::HMAC_SECRET_BYTES_MIN`] bytes, and the JWKS file (a relative path is
    /// relative to `base_dir`). Fails with a message that never contains the secret.
    pub fn load(
        auth: &AuthConfig,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Authenticator, String> {
        auth.validate()?;
        let secret = hmac_secret(auth, env)?;
        let jwks =
            match &auth.jwks_file {
                Some(path) => {
                    let path = base_dir.join(path);
                    Some(std::fs::read_to_string(&path).map_err(|e| {
                        format!("auth.jwks_file: cannot read {}: {e}", path.display())
                    })?)
                }
                None => None,
            };
        let keys = KeySet::new(secret.as_deref(), jwks.as_deref())?;
        Ok(Authenticator {
            headers: auth
                .token_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            keys,
            rules: Rules {
                algorithms: auth.allowed_algorithms(),
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
                leeway_s: auth.leeway_s,
                validate_nbf: auth.validate_nbf,
                user_id_claim: auth.user_id_claim.clone(),
                token_bytes_max: auth.token_bytes_max,
                user_id_bytes_max: auth.user_id_bytes_max,
            },
            clock,
        })
    }

    /// The headers tokens are read from (lower-case, in precedence order).
    pub fn header_names(&self) -> &[String] {
        &self.headers
    }

    /// The caller of a request, given the values of [`Authenticator::header_names`] (each name
    /// with its values in request order).
    pub fn authenticate(&self, headers: &[(String, Vec<Vec<u8>>)]) -> Result<Identity, AuthError> {
        match token::find_token(headers) {
            Presented::Nothing => Ok(Identity::Anonymous),
            Presented::Malformed(reason) => Err(AuthError { reason }),
            Presented::Token(t) => self.verify(&t).map(Identity::User),
        }
    }

    /// Verify one token now.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        token::verify(token, &self.keys, &self.rules, self.clock.now_unix_s())
            .map_err(|reason| AuthError { reason })
    }
}

/// The HMAC secret's bytes, from `hmac_secret` or the `hmac_secret_env` variable.
fn hmac_secret(
    auth: &AuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    let text = match (&auth.hmac_secret, &auth.hmac_secret_env) {
        (Some(secret), _) => secret.0.clone(),
        (None, Some(var)) => env(var).ok_or_else(|| {
            format!("auth.hmac_secret_env: the environment variable {var} is not set")
        })?,
        (None, None) => return Ok(None),
    };
    let bytes = auth.hmac_secret_encoding.decode(&text)?;
    let what = match &auth.hmac_secret_env {
        Some(var) => format!("the HMAC secret in {var}"),
        None => "auth.hmac_secret".to_owned(),
    };
    config::check_secret_length(bytes.len(), &what)?;
    Ok(Some(bytes))
}

/// Mint an HS256 development token for `user_id` valid for `ttl_s` seconds from `now_unix_s`,
/// signed with the configured secret (inline or from the environment through `env`), carrying
/// the configured `iss`/`aud` and the user id under `user_id_claim` (`tablesync token`).
pub fn mint_dev_token(
    auth: &AuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
    user_id: &str,
    ttl_s: u64,
    now_unix_s: i64,
) -> Result<String, String> {
    auth.validate()?;
    if user_id.is_empty() || user_id.len() > auth.user_id_bytes_max {
        return Err(format!(
            "the user id must be 1 to {} bytes long",
            auth.user_id_bytes_max
        ));
    }
    if !auth
        .allowed_algorithms()
        .contains(&jsonwebtoken::Algorithm::HS256)
    {
        return Err(
            "auth.algorithms does not allow HS256, so the server would refuse the token".into(),
        );
    }
    let secret = hmac_secret(auth, env)?
        .ok_or("tablesync token signs with the HMAC secret, but [auth] configures none")?;
    let exp = now_unix_s.saturating_add(i64::try_from(ttl_s).unwrap_or(i64::MAX));
    let mut claims = Map::new();
    claims.insert(
        auth.user_id_claim.clone(),
        Value::String(user_id.to_owned()),
    );
    claims.insert("iat".into(), Value::from(now_unix_s));
    claims.insert("nbf".into(), Value::from(now_unix_s));
    claims.insert("exp".into(), Value::from(exp));
    if let Some(iss) = &auth.issuer {
        claims.insert("iss".into(), Value::String(iss.clone()));
    }
    if let Some(aud) = &auth.audience {
        claims.insert("aud".into(), Value::String(aud.clone()));
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authenticator(auth: &AuthConfig, now: i64) -> Authenticator {
        Authenticator::load(
            auth,
            Path::new("."),
            &|_| None,
            Arc::new(FixedClock::new(now)),
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify_and_expire() {
        let auth = AuthConfig::with_secret(SECRET);
        let token = mint_dev_token(&auth, &|_| None, "alice", 60, 1_000).unwrap();
        let p = authenticator(&auth, 1_000).verify(&token).unwrap();
        assert_eq!(p.user_id, "alice");
        assert_eq!(p.claims["exp"], 1_060);
        // exp + leeway (30 s) is the first refused second.
        assert!(authenticator(&auth, 1_089).verify(&token).is_ok());
        let e = authenticator(&auth, 1_090).verify(&token).unwrap_err();
        assert!(e.reason.starts_with("expired"), "{e}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_must_be_long() {
        let mut auth = AuthConfig::with_secret("short");
        assert!(auth.validate().unwrap_err().contains("at least 32 bytes"));
        auth.hmac_secret = None;
        auth.hmac_secret_env = Some("SECRET_VAR".into());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let e = Authenticator::load(&auth, Path::new("."), &|_| None, clock.clone()).unwrap_err();
        assert!(e.contains("SECRET_VAR is not set"), "{e}");
        let e = Authenticator::load(
            &auth,
            Path::new("."),
            &|_| Some("tiny".into()),
            clock.clone(),
        )
        .unwrap_err();
        assert!(e.contains("is 4 bytes long") && !e.contains("tiny"), "{e}");
        assert!(
            Authenticator::load(&auth, Path::new("."), &|_| Some(SECRET.into()), clock).is_ok()
        );
    }
}
