//! Verification keys: the HMAC secret and the public keys of a JWKS file, loaded once at start,
//! and the choice of key for a token's header. No crypto here: `jsonwebtoken` verifies.
//!
//! Algorithm confusion is blocked twice: a token's `alg` picks the key *family* (an HS256 token
//! can only ever meet the HMAC secret, never a JWKS public key used as an HMAC secret), and
//! `jsonwebtoken` refuses a key of another family than the algorithm's.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header};

/// One public key of the JWKS file.
struct PublicKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: the only algorithm the key may verify.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    /// EC keys: the curve (P-256 for ES256, P-384 for ES384).
    curve: Option<EllipticCurve>,
    key: DecodingKey,
}

/// Every key a token may be verified with.
pub struct KeySet {
    hmac: Option<DecodingKey>,
    public: Vec<PublicKey>,
}

impl KeySet {
    /// The keys: an HMAC secret (already length-checked) and/or a JWKS document's text.
    pub fn new(hmac_secret: Option<&[u8]>, jwks: Option<&str>) -> Result<KeySet, String> {
        let public = match jwks {
            Some(text) => parse_jwks(text)?,
            None => Vec::new(),
        };
        Ok(KeySet {
            hmac: hmac_secret.map(DecodingKey::from_secret),
            public,
        })
    }

    /// The key to verify a token with this header, or why there is none (for the log).
    pub fn select(&self, header: &Header) -> Result<&DecodingKey, String> {
        let alg = header.alg;
        if alg.family() == AlgorithmFamily::Hmac {
            return self
                .hmac
                .as_ref()
                .ok_or_else(|| format!("{alg:?} token but no HMAC secret is configured"));
        }
        let fits = |k: &&PublicKey| {
            k.family == alg.family()
                && k.alg.is_none_or(|a| a == alg)
                && match (&k.curve, alg) {
                    (Some(EllipticCurve::P256), Algorithm::ES256) => true,
                    (Some(EllipticCurve::P384), Algorithm::ES384) => true,
                    (Some(_), _) => false,
                    (None, _) => true,
                }
        };
        match &header.kid {
            Some(kid) => self
                .public
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .map(|k| &k.key)
                .ok_or_else(|| format!("no {alg:?} key with kid {:?}", shorten(kid))),
            None => {
                let mut candidates = self.public.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Ok(&only.key),
                    (None, _) => Err(format!("no key for {alg:?} tokens is configured")),
                    (Some(_), Some(_)) => Err(format!(
                        "the token has no kid and several {alg:?} keys are configured"
                    )),
                }
            }
        }
    }
}

/// At most 64 characters of an attacker-chosen string, for a log line.
pub fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// The signing keys of a JWKS document. Symmetric (`oct`) keys are refused: secrets do not
/// belong in a public key file. Keys marked `"use": "enc"` are skipped.
fn parse_jwks(text: &str) -> Result<Vec<PublicKey>, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("jwks_file is not a JWK set: {e}"))?;
    let mut out: Vec<PublicKey> = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let name = kid
            .as_deref()
            .map_or_else(|| format!("key #{index}"), |k| format!("key {k:?}"));
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => Some(Algorithm::from_str(&ka.to_string()).map_err(|_| {
                format!("jwks_file: {name} has alg {ka}, not a signature algorithm")
            })?),
        };
        let (family, curve, key) = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => (
                AlgorithmFamily::Rsa,
                None,
                DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
                    .map_err(|e| format!("jwks_file: {name}: {e}"))?,
            ),
            AlgorithmParameters::EllipticCurve(ec) => {
                if !matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) {
                    return Err(format!(
                        "jwks_file: {name} uses curve {:?}; only P-256 (ES256) and P-384 (ES384) are supported",
                        ec.curve
                    ));
                }
                (
                    AlgorithmFamily::Ec,
                    Some(ec.curve.clone()),
                    DecodingKey::from_ec_components(&ec.x, &ec.y)
                        .map_err(|e| format!("jwks_file: {name}: {e}"))?,
                )
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(format!(
                    "jwks_file: {name} is a symmetric (oct) key; HMAC secrets belong in hmac_secret_env"
                ))
            }
            AlgorithmParameters::OctetKeyPair(_) => {
                return Err(format!(
                    "jwks_file: {name} is an EdDSA key, which is not supported"
                ))
            }
        };
        if alg.is_some_and(|a| a.family() != family) {
            return Err(format!(
                "jwks_file: {name}: its alg does not fit its key type"
            ));
        }
        if kid.is_some() && out.iter().any(|k| k.kid == kid) {
            return Err(format!("jwks_file: {name} appears twice"));
        }
        out.push(PublicKey {
            kid,
            alg,
            family,
            curve,
            key,
        });
    }
    if out.is_empty() {
        return Err("jwks_file holds no signature key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvy";

    fn jwks(keys: &str) -> String {
        format!("{{\"keys\": [{keys}]}}")
    }

    fn rsa(kid: &str) -> String {
        format!("{{\"kty\":\"RSA\",\"kid\":\"{kid}\",\"n\":\"{RSA_N}\",\"e\":\"AQAB\"}}")
    }

    #[test]
    fn secrets_do_not_belong_in_a_jwks_file() {
        let e = parse_jwks(&jwks(r#"{"kty":"oct","k":"c2VjcmV0"}"#))
            .err()
            .unwrap();
        assert!(e.contains("symmetric"), "{e}");
        assert!(parse_jwks(&jwks(""))
            .err()
            .unwrap()
            .contains("no signature key"));
        let twice = format!("{},{}", rsa("a"), rsa("a"));
        assert!(parse_jwks(&jwks(&twice)).err().unwrap().contains("twice"));
    }

    #[test]
    fn keys_are_chosen_by_family_and_kid() {
        let two = format!("{},{}", rsa("a"), rsa("b"));
        let set = KeySet::new(None, Some(&jwks(&two))).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        assert!(set.select(&header).unwrap_err().contains("no kid"));
        header.kid = Some("b".into());
        assert!(set.select(&header).is_ok());
        header.kid = Some("../../etc/passwd".into());
        assert!(set.select(&header).unwrap_err().contains("no RS256 key"));
        // An HS256 token never meets a public key.
        let hs = Header::new(Algorithm::HS256);
        assert!(set.select(&hs).unwrap_err().contains("no HMAC secret"));
        let es = Header::new(Algorithm::ES256);
        assert!(set.select(&es).is_err());
    }
}
