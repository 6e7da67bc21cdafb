//! Tokens for the auth tests: well-formed ones signed with the test keys
//! (`tests/fixtures/auth/`), and hand-assembled hostile ones (any header, payload and signature
//! bytes). Times are relative to [`NOW`], the second the servers' [`FixedClock`] shows.

use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use tablesync_server::auth::{AuthConfig, FixedClock};
use tablesync_server::Config;

/// What the fixed clock shows, in seconds since the epoch.
pub const NOW: i64 = 1_800_000_000;
/// The configured leeway, in seconds.
pub const LEEWAY: i64 = 30;
/// The HMAC secret of the test configuration (32 bytes).
pub const SECRET: &str = "test-secret-0123456789abcdef-xyz";
/// The configured `iss`.
pub const ISSUER: &str = "https://issuer.test/";
/// The configured `aud`.
pub const AUDIENCE: &str = "https://app.test/";

/// The directory of the test keys.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth")
}

/// A fixture file's text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

/// The DER bytes inside a PEM file.
pub fn pem_der(name: &str) -> Vec<u8> {
    let body: String = fixture(name)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).unwrap()
}

/// A clock standing at [`NOW`].
pub fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::new(NOW))
}

/// `[auth]` with the secret, the JWKS file, issuer, audience and a 30 s leeway.
pub fn auth_config() -> AuthConfig {
    let mut auth = AuthConfig::with_secret(SECRET);
    auth.jwks_file = Some(fixtures().join("jwks.json"));
    auth.issuer = Some(ISSUER.into());
    auth.audience = Some(AUDIENCE.into());
    auth.leeway_s = LEEWAY as u64;
    auth
}

/// Tables of the auth tests: `Todo` (per-user, `userId`), `Note` (per-user, hard delete) and
/// `Public` (anonymous).
pub const TABLES: &str = r#"
[[tables]]
name = "Todo"
columns = { text = "string", complete = "boolean" }
owner_column = "userId"

[[tables]]
name = "Note"
columns = { text = "string" }
soft_delete = false
owner_column = "userId"

[[tables]]
name = "Public"
columns = { text = "string" }
access = "anonymous"
"#;

/// The test tables with `[auth]`.
pub fn config_with(auth: AuthConfig) -> Config {
    tables_with(TABLES, auth)
}

/// The tables of a TOML snippet with `[auth]`, validated.
pub fn tables_with(toml_tables: &str, auth: AuthConfig) -> Config {
    let mut config: Config = toml::from_str(toml_tables).unwrap();
    config.auth = Some(auth);
    config.validate().unwrap();
    config
}

/// Valid claims for `sub`: issuer, audience, `exp` in 10 minutes, `nbf` 10 s ago.
pub fn claims(sub: &str) -> Map<String, Value> {
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 600,
    })
    .as_object()
    .unwrap()
    .clone()
}

/// `claims` with `key` set (or removed when `value` is None).
pub fn with(mut claims: Map<String, Value>, key: &str, value: Option<Value>) -> Map<String, Value> {
    match value {
        Some(v) => claims.insert(key.into(), v),
        None => claims.remove(key),
    };
    claims
}

/// HS256 with the configured secret.
pub fn hs256(claims: &Map<String, Value>) -> String {
    hmac(Algorithm::HS256, claims, SECRET.as_bytes())
}

/// An HMAC token with any algorithm and secret.
pub fn hmac(alg: Algorithm, claims: &Map<String, Value>, secret: &[u8]) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A valid HS256 token for `sub`.
pub fn token(sub: &str) -> String {
    hs256(&claims(sub))
}

/// RS256 with the JWKS key `rsa-1` (or another private key file), header `kid` as given.
pub fn rs256(claims: &Map<String, Value>, key_file: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_der(&pem_der(key_file)),
    )
    .unwrap()
}

/// ES256 with the JWKS key `ec-1`.
pub fn es256(claims: &Map<String, Value>, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_der(&pem_der("ec-private.pem")),
    )
    .unwrap()
}

/// A token assembled from raw parts: header and payload JSON text, signature bytes.
pub fn raw(header: &str, payload: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// An HS256 token over raw header and payload text, correctly signed with the configured secret
/// (for payloads `jsonwebtoken` would not write, such as a duplicated claim).
pub fn signed_raw(header: &str, payload: &str) -> String {
    let unsigned = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        unsigned.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{unsigned}.{signature}")
}
