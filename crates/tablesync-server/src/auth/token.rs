//! Pure token rules: which header value is the token, and whether a token is acceptable at a
//! given second. `jsonwebtoken` checks the signature, `iss` and `aud`; the time claims are
//! checked here against the injected clock (the crate would read the system clock), and so are
//! the shape of the token and the user id.
//!
//! Every refusal is a reason for the log; none contains the token.
//!
//! Time rules (RFC 7519 4.1.4/4.1.5, with the leeway `L` on both sides):
//! * `exp` is required and must be an integer: accepted while `now < exp + L`, so a token with
//!   `exp = now - L` is refused and `exp = now - L + 1` accepted;
//! * `nbf`, when present (and `validate_nbf`), must be an integer: accepted once
//!   `now >= nbf - L`, so `nbf = now + L` is accepted and `nbf = now + L + 1` refused.

use std::collections::HashSet;
use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::keys::{shorten, KeySet};
use super::Principal;

/// What the request's token headers hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No token (an `Authorization` header of another scheme, e.g. `Basic`, is not a token).
    Nothing,
    /// One token (the same token in several headers counts once).
    Token(String),
    /// Something that is meant to be a token but cannot be one; the reason, for the log.
    Malformed(String),
}

/// Find the token in the values of the configured headers (`headers`: each configured name,
/// lower-case, in precedence order, with its values in request order).
///
/// `authorization` must be `Bearer <token>` (scheme case-insensitive); another scheme is not a
/// token. Any other header carries the bare token (an optional `Bearer ` prefix is removed, as
/// the Node server does). An empty token, or two different tokens, is malformed.
pub fn find_token(headers: &[(String, Vec<Vec<u8>>)]) -> Presented {
    let mut found: Vec<(String, &str)> = Vec::new();
    for (name, values) in headers {
        for raw in values {
            let Ok(text) = std::str::from_utf8(raw) else {
                return Presented::Malformed(format!("{name} is not ASCII"));
            };
            let text = text.trim();
            let token = if name == "authorization" {
                match split_scheme(text) {
                    Some(("bearer", rest)) => rest,
                    // Basic, Digest, …: meant for something else; not ours to judge.
                    Some(_) => continue,
                    None if text.eq_ignore_ascii_case("bearer") => "",
                    None => continue,
                }
            } else {
                match split_scheme(text) {
                    Some(("bearer", rest)) => rest,
                    _ if text.eq_ignore_ascii_case("bearer") => "",
                    _ => text,
                }
            };
            if token.is_empty() {
                return Presented::Malformed(format!("{name} holds an empty token"));
            }
            found.push((token.to_owned(), name.as_str()));
        }
    }
    match found.split_first() {
        None => Presented::Nothing,
        Some(((first, _), rest)) => match rest.iter().find(|(t, _)| t != first) {
            Some((_, other)) => {
                Presented::Malformed(format!("two different tokens ({} and {other})", found[0].1))
            }
            None => Presented::Token(first.clone()),
        },
    }
}

/// `("bearer", "abc")` for `Bearer abc` (scheme lower-cased), None without a space.
fn split_scheme(text: &str) -> Option<(&'static str, &str)> {
    let (scheme, rest) = text.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        "bearer"
    } else {
        "other"
    };
    Some((scheme, rest.trim()))
}

/// What a token is checked against (from `[auth]`, resolved at start).
pub struct Rules {
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when configured.
    pub issuer: Option<String>,
    /// Required `aud`, when configured.
    pub audience: Option<String>,
    /// Leeway on `exp`/`nbf`, in seconds.
    pub leeway_s: u64,
    /// Check `nbf` when present.
    pub validate_nbf: bool,
    /// The claim holding the user id.
    pub user_id_claim: String,
    /// Longest token, in bytes.
    pub token_bytes_max: usize,
    /// Longest user id, in bytes.
    pub user_id_bytes_max: usize,
}

/// Verify `token` at `now_unix_s`: the principal it names, or why it is refused.
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &Rules,
    now_unix_s: i64,
) -> Result<Principal, String> {
    if token.len() > rules.token_bytes_max {
        return Err(format!(
            "the token is {} bytes long, more than token_bytes_max ({})",
            token.len(),
            rules.token_bytes_max
        ));
    }
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() != 3 {
        return Err(format!(
            "the token has {} segments, not 3 (header.payload.signature)",
            segments.len()
        ));
    }
    let base64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    for (segment, name) in segments.iter().zip(["header", "payload", "signature"]) {
        if !base64url(segment) {
            return Err(format!("the token's {name} is empty or not base64url"));
        }
    }
    let header = decode_header(token).map_err(|e| format!("unreadable header: {e}"))?;
    if header.crit.is_some() {
        return Err("the header has critical extensions (crit), which are not supported".into());
    }
    if !rules.algorithms.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not allowed", header.alg));
    }
    let key = keys.select(&header)?;
    let mut validation = Validation::new(header.alg);
    // Time claims are checked below against the injected clock; the crate would read the
    // system clock itself.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims = HashSet::new();
    match &rules.issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        None => validation.iss = None,
    }
    match &rules.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    let data = decode::<UniqueClaims>(token, key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("the {c} claim is missing"),
        other => format!("the token does not decode: {other:?}"),
    })?;
    let claims = data.claims.0;
    let leeway = i128::from(rules.leeway_s);
    let now = i128::from(now_unix_s);
    let exp = integer_claim(&claims, "exp")?.ok_or("the exp claim is missing")?;
    if now >= exp + leeway {
        return Err(format!("expired: exp {exp}, now {now}, leeway {leeway} s"));
    }
    if rules.validate_nbf {
        if let Some(nbf) = integer_claim(&claims, "nbf")? {
            if now < nbf - leeway {
                return Err(format!(
                    "not valid yet: nbf {nbf}, now {now}, leeway {leeway} s"
                ));
            }
        }
    }
    let user_id = match claims.get(&rules.user_id_claim) {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(format!("the {} claim is not a string", rules.user_id_claim)),
        None => return Err(format!("the {} claim is missing", rules.user_id_claim)),
    };
    if user_id.is_empty() {
        return Err(format!("the {} claim is empty", rules.user_id_claim));
    }
    if user_id.len() > rules.user_id_bytes_max {
        return Err(format!(
            "the {} claim is {} bytes long, more than user_id_bytes_max ({})",
            rules.user_id_claim,
            user_id.len(),
            rules.user_id_bytes_max
        ));
    }
    if user_id.chars().any(char::is_control) {
        return Err(format!(
            "the {} claim {:?} contains control characters",
            rules.user_id_claim,
            shorten(&user_id)
        ));
    }
    Ok(Principal { user_id, claims })
}

/// An integer `NumericDate` claim (None when absent); a string, a fraction or a value outside
/// ±2^63 is refused: `exp: "9999999999"` must not be read as "never expires".
fn integer_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i128>, String> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(Some(i128::from(i))),
            (None, Some(u)) => Ok(Some(i128::from(u))),
            _ => Err(format!("the {name} claim is not an integer")),
        },
        Some(_) => Err(format!("the {name} claim is not a number")),
    }
}

/// The claims object, refusing a claim that appears twice: parsers disagree on which copy wins
/// (first or last), so a duplicated `sub` could name one user to a proxy and another to us.
struct UniqueClaims(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;
        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = UniqueClaims;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueClaims, A::Error> {
                let mut out = Map::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "the {} claim appears twice",
                            shorten(&key)
                        )));
                    }
                    out.insert(key, value);
                }
                Ok(UniqueClaims(out))
            }
        }
        d.deserialize_map(ClaimsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(n, vs)| {
                (
                    n.to_string(),
                    vs.iter().map(|v| v.as_bytes().to_vec()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn tokens_are_found_in_the_configured_headers() {
        let t = |s: &str| Presented::Token(s.into());
        assert_eq!(find_token(&headers(&[])), Presented::Nothing);
        assert_eq!(
            find_token(&headers(&[("x-zumo-auth", &["a.b.c"])])),
            t("a.b.c")
        );
        assert_eq!(
            find_token(&headers(&[("x-zumo-auth", &["Bearer a.b.c"])])),
            t("a.b.c")
        );
        assert_eq!(
            find_token(&headers(&[("authorization", &["bEaReR  a.b.c "])])),
            t("a.b.c")
        );
        // Another scheme is not a token; a bare scheme is an empty one.
        assert_eq!(
            find_token(&headers(&[("authorization", &["Basic dTpw"])])),
            Presented::Nothing
        );
        assert!(matches!(
            find_token(&headers(&[("authorization", &["Bearer"])])),
            Presented::Malformed(_)
        ));
        assert!(matches!(
            find_token(&headers(&[("x-zumo-auth", &[""])])),
            Presented::Malformed(_)
        ));
        // The same token twice is one token; two different ones are refused.
        let both = headers(&[
            ("x-zumo-auth", &["a.b.c"]),
            ("authorization", &["Bearer a.b.c"]),
        ]);
        assert_eq!(find_token(&both), t("a.b.c"));
        let two = headers(&[
            ("x-zumo-auth", &["a.b.c"]),
            ("authorization", &["Bearer d.e.f"]),
        ]);
        assert!(matches!(find_token(&two), Presented::Malformed(m) if m.contains("two different")));
        let lines = headers(&[("x-zumo-auth", &["a.b.c", "d.e.f"])]);
        assert!(matches!(find_token(&lines), Presented::Malformed(_)));
        let bytes = vec![("x-zumo-auth".to_string(), vec![vec![0xff, 0xfe]])];
        assert!(matches!(find_token(&bytes), Presented::Malformed(_)));
    }

    #[test]
    fn numeric_dates_must_be_integers() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"a": 5, "b": 5.5, "c": "5", "d": 18446744073709551615, "e": -3}"#,
        )
        .unwrap();
        assert_eq!(integer_claim(&claims, "a"), Ok(Some(5)));
        assert!(integer_claim(&claims, "b").is_err());
        assert!(integer_claim(&claims, "c").is_err());
        assert_eq!(integer_claim(&claims, "d"), Ok(Some(u64::MAX.into())));
        assert_eq!(integer_claim(&claims, "e"), Ok(Some(-3)));
        assert_eq!(integer_claim(&claims, "z"), Ok(None));
    }

    #[test]
    fn duplicated_claims_are_refused() {
        let e = serde_json::from_str::<UniqueClaims>(r#"{"sub":"a","sub":"b"}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("sub claim appears twice"), "{e}");
    }
}
