//! Token hostile cases of `shared/design/auth.md` 6.4 (1–11): every refused token gets the same
//! 401 (our JSON body, `WWW-Authenticate: Bearer error="invalid_token"`) on the per-user table
//! *and* on the anonymous table, on both stores. The clock is a [`FixedClock`] at
//! [`tokens::NOW`], so the `exp`/`nbf` boundaries are pinned to the second without sleeping.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{json, Value};
use tablesync_server::auth::AuthConfig;
use tablesync_server::{Config, Server};

use crate::tokens::{self, *};
use crate::{err, send, Resp, StoreKind, TestServer};

async fn server(kind: StoreKind) -> TestServer {
    server_with(kind, auth_config()).await
}

async fn server_with(kind: StoreKind, auth: AuthConfig) -> TestServer {
    TestServer::with_clock(kind, config_with(auth), tokens::clock()).await
}

/// GET `path` with `X-ZUMO-AUTH: token`.
async fn get_as(s: &TestServer, path: &str, token: &str) -> Resp {
    send(s.req(Method::GET, path).header("X-ZUMO-AUTH", token)).await
}

fn refused_body() -> Value {
    err("unauthorized", "The authentication token was refused")
}

fn assert_refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    assert_eq!(r.body, refused_body(), "{what}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{what}"
    );
}

/// The token is refused on the per-user table and on the anonymous one.
async fn assert_refused_everywhere(s: &TestServer, token: &str, what: &str) {
    for path in [
        "/tables/Todo",
        "/tables/Public",
        "/tables/Todo/x",
        "/tables/Public/x",
    ] {
        let r = get_as(s, path, token).await;
        assert_refused(&r, &format!("{what} on {path}"));
    }
}

async fn assert_accepted(s: &TestServer, token: &str, what: &str) {
    let r = get_as(s, "/tables/Todo", token).await;
    assert_eq!(r.status, 200, "{what}: {:?}", r.body);
}

async fn valid_tokens_of_every_algorithm_are_accepted(kind: StoreKind) {
    let s = server(kind).await;
    let alice = claims("alice");
    assert_accepted(&s, &hs256(&alice), "HS256").await;
    assert_accepted(
        &s,
        &rs256(&alice, "rsa-private.pem", Some("rsa-1")),
        "RS256 kid",
    )
    .await;
    assert_accepted(&s, &es256(&alice, Some("ec-1")), "ES256 kid").await;
    // With one key per family a kid is not needed.
    assert_accepted(&s, &es256(&alice, None), "ES256 no kid").await;
    // Both headers carry tokens the same way; `Bearer` works in either.
    let t = token("alice");
    let r = send(
        s.req(Method::GET, "/tables/Todo")
            .header("Authorization", format!("bearer {t}")),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = send(
        s.req(Method::GET, "/tables/Todo")
            .header("X-ZUMO-AUTH", format!("Bearer {t}"))
            .header("Authorization", format!("Bearer {t}")),
    )
    .await;
    assert_eq!(r.status, 200, "the same token twice: {:?}", r.body);
}

/// 6.4.1: `alg: none` (any spelling) with an empty signature.
async fn alg_none_is_refused(kind: StoreKind) {
    let s = server(kind).await;
    let payload = serde_json::to_string(&claims("alice")).unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let token = raw(&header, &payload, b"");
        // `raw` leaves a trailing dot for the empty signature: exactly what such tokens look like.
        assert!(token.ends_with('.'));
        assert_refused_everywhere(&s, &token, &format!("alg {alg}")).await;
        // And with a signature that is not empty either.
        assert_refused_everywhere(&s, &raw(&header, &payload, b"sig"), alg).await;
    }
}

/// 6.4.2: RS→HS confusion: HS256 signed with the JWKS RSA public key (PEM text and DER bytes)
/// as the HMAC secret, with only the JWKS configured and with HMAC + JWKS.
async fn rsa_public_key_as_hmac_secret_is_refused(kind: StoreKind) {
    let pem = fixture("rsa-public.pem");
    let der = pem_der("rsa-public.pem");
    let alice = claims("alice");
    let forged = [
        hmac(Algorithm::HS256, &alice, pem.as_bytes()),
        hmac(Algorithm::HS256, &alice, &der),
    ];
    let mut jwks_only = auth_config();
    jwks_only.hmac_secret = None;
    for (name, auth) in [("HMAC + JWKS", auth_config()), ("JWKS only", jwks_only)] {
        let s = server_with(kind, auth).await;
        for token in &forged {
            assert_refused_everywhere(&s, token, name).await;
        }
        // The real RS256 token still works.
        assert_accepted(&s, &rs256(&alice, "rsa-private.pem", Some("rsa-1")), name).await;
    }
}

/// 6.4.3: algorithms off the allow-list.
async fn algorithms_off_the_allow_list_are_refused(kind: StoreKind) {
    let s = server(kind).await;
    let alice = claims("alice");
    // HS512 with the right secret: HS256, RS256 and ES256 are allowed.
    assert_refused_everywhere(
        &s,
        &hmac(Algorithm::HS512, &alice, SECRET.as_bytes()),
        "HS512",
    )
    .await;
    let mut hs_only = auth_config();
    hs_only.algorithms = Some(vec![Algorithm::HS256]);
    let s = server_with(kind, hs_only).await;
    let rs = rs256(&alice, "rsa-private.pem", Some("rsa-1"));
    assert_refused_everywhere(&s, &rs, "RS256 when only HS256").await;
    assert_accepted(&s, &hs256(&alice), "HS256").await;
}

/// 6.4.4 and 6.4.5: `exp` and `nbf` at their exact boundaries (RFC 7519: valid while
/// `now < exp + leeway` and once `now >= nbf - leeway`), missing `exp`, odd types.
async fn expiry_and_not_before_boundaries(kind: StoreKind) {
    let s = server(kind).await;
    let at = |key: &str, v: Value| hs256(&with(claims("alice"), key, Some(v)));
    assert_refused_everywhere(
        &s,
        &at("exp", json!(NOW - LEEWAY - 1)),
        "exp = now - leeway - 1",
    )
    .await;
    assert_refused_everywhere(&s, &at("exp", json!(NOW - LEEWAY)), "exp = now - leeway").await;
    assert_accepted(
        &s,
        &at("exp", json!(NOW - LEEWAY + 1)),
        "exp = now - leeway + 1",
    )
    .await;
    let no_exp = hs256(&with(claims("alice"), "exp", None));
    assert_refused_everywhere(&s, &no_exp, "no exp").await;
    assert_refused_everywhere(
        &s,
        &at("nbf", json!(NOW + LEEWAY + 1)),
        "nbf = now + leeway + 1",
    )
    .await;
    assert_accepted(&s, &at("nbf", json!(NOW + LEEWAY)), "nbf = now + leeway").await;
    for (key, v) in [
        ("exp", json!((NOW + 600).to_string())),
        ("exp", json!(NOW as f64 + 600.5)),
        ("nbf", json!((NOW - 10).to_string())),
        ("nbf", json!(NOW as f64 - 10.5)),
    ] {
        assert_refused_everywhere(&s, &at(key, v.clone()), &format!("{key} = {v}")).await;
    }
}

/// 6.4.4 with a clock that moves: the same token is accepted, then refused once the clock
/// passes `exp + leeway` (no sleeping: the test sets the clock).
async fn a_token_expires_when_the_clock_passes_exp_plus_leeway(kind: StoreKind) {
    let clock = tokens::clock();
    let s = TestServer::with_clock(kind, config_with(auth_config()), clock.clone()).await;
    let t = token("alice");
    assert_accepted(&s, &t, "fresh").await;
    clock.set(NOW + 600 + LEEWAY - 1);
    assert_accepted(&s, &t, "last second").await;
    clock.set(NOW + 600 + LEEWAY);
    assert_refused_everywhere(&s, &t, "expired").await;
}

/// 6.4.6: issuer and audience.
async fn wrong_or_missing_issuer_and_audience_are_refused(kind: StoreKind) {
    let s = server(kind).await;
    let cases = [
        ("iss", Some(json!("https://evil.test/")), "wrong iss"),
        ("iss", None, "missing iss"),
        ("iss", Some(json!(42)), "numeric iss"),
        ("aud", Some(json!("https://other.test/")), "wrong aud"),
        ("aud", None, "missing aud"),
        (
            "aud",
            Some(json!(["https://other.test/", "x"])),
            "aud array without ours",
        ),
    ];
    for (key, value, what) in cases {
        let t = hs256(&with(claims("alice"), key, value));
        assert_refused_everywhere(&s, &t, what).await;
    }
    let ours = hs256(&with(
        claims("alice"),
        "aud",
        Some(json!(["https://other.test/", AUDIENCE])),
    ));
    assert_accepted(&s, &ours, "aud array with ours").await;
}

/// 6.4.7: tampered, truncated, malformed and oversized tokens.
async fn tampered_and_malformed_tokens_are_refused(kind: StoreKind) {
    let s = server(kind).await;
    let good = token("alice");
    let parts: Vec<&str> = good.split('.').collect();
    // Flip one byte of the payload: `sub` alice → blice, signature kept.
    let payload = serde_json::to_string(&claims("alice"))
        .unwrap()
        .replace("alice", "blice");
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        base64_url(payload.as_bytes()),
        parts[2]
    );
    let tampered_header = format!(
        "{}.{}.{}",
        base64_url(br#"{"alg":"HS256","typ":"JWT","kid":"x"}"#),
        parts[1],
        parts[2]
    );
    let truncated = &good[..good.len() - 4];
    let four = format!("{good}.{}", parts[2]);
    let not_base64 = format!("{}.{}.{}", parts[0], "eyJzdWIiOiJh!GFsaWNlIn0", parts[2]);
    let spaces = format!("{} {}", parts[0], parts[1]);
    let padding = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
    let huge = hs256(&with(
        claims("alice"),
        "pad",
        Some(json!("x".repeat(9 * 1024))),
    ));
    let cases = [
        (tampered_payload.as_str(), "tampered payload"),
        (tampered_header.as_str(), "tampered header"),
        (truncated, "truncated signature"),
        (four.as_str(), "four segments"),
        (not_base64.as_str(), "non-base64url bytes"),
        (spaces.as_str(), "two segments with a space"),
        (padding.as_str(), "base64 padding"),
        (huge.as_str(), "9 KB token"),
        ("a.b", "two segments"),
        ("..", "empty segments"),
    ];
    for (token, what) in cases {
        assert_refused_everywhere(&s, token, what).await;
    }
    // Non-ASCII header bytes are refused too (not a 400, not a panic).
    let r = send(s.req(Method::GET, "/tables/Public").header(
        "X-ZUMO-AUTH",
        reqwest::header::HeaderValue::from_bytes(b"\xff\xfe.a.b").unwrap(),
    ))
    .await;
    assert_refused(&r, "non-ASCII header");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// 6.4.8: the user id claim: missing, empty, not a string, too long, duplicated, control
/// characters.
async fn odd_user_ids_are_refused(kind: StoreKind) {
    let s = server(kind).await;
    for (value, what) in [
        (None, "sub missing"),
        (Some(json!("")), "sub empty"),
        (Some(json!(12345)), "sub numeric"),
        (Some(json!("u".repeat(300))), "sub of 300 bytes"),
        (Some(json!("ali\u{0}ce")), "sub with NUL"),
        (Some(json!(["alice"])), "sub array"),
    ] {
        let t = hs256(&with(claims("alice"), "sub", value));
        assert_refused_everywhere(&s, &t, what).await;
    }
    // 255 bytes is the limit, and fits.
    assert_accepted(&s, &token(&"u".repeat(255)), "sub of 255 bytes").await;
    // A duplicated claim, correctly signed: parsers disagree on which copy wins.
    let payload = format!(
        r#"{{"sub":"alice","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"sub":"bob"}}"#,
        NOW + 600
    );
    let dup = signed_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &payload);
    assert_refused_everywhere(&s, &dup, "duplicated sub").await;
    let single = format!(
        r#"{{"sub":"alice","iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}}}"#,
        NOW + 600
    );
    assert_accepted(
        &s,
        &signed_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &single),
        "control",
    )
    .await;
}

/// 6.4.9: key ids and the headers that point at keys elsewhere.
async fn unknown_kids_and_key_urls_do_not_pick_keys(kind: StoreKind) {
    let s = server(kind).await;
    let alice = claims("alice");
    for kid in ["nope", "../../etc/passwd", "rsa-1\u{0}", "ec-1"] {
        let t = rs256(&alice, "rsa-private.pem", Some(kid));
        assert_refused_everywhere(&s, &t, &format!("kid {kid:?}")).await;
    }
    // Signed by a key in no JWKS, with jku/x5u pointing at the attacker's keys: refused (the
    // server never fetches them).
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    header.jku = Some("http://127.0.0.1:9/evil-jwks.json".into());
    header.x5u = Some("http://127.0.0.1:9/evil.pem".into());
    let other = jsonwebtoken::encode(
        &header,
        &alice,
        &jsonwebtoken::EncodingKey::from_rsa_der(&pem_der("rsa-other-private.pem")),
    )
    .unwrap();
    assert_refused_everywhere(&s, &other, "foreign key with jku/x5u").await;
    // The same headers on a token of the real key are ignored: it is accepted.
    let real = jsonwebtoken::encode(
        &header,
        &alice,
        &jsonwebtoken::EncodingKey::from_rsa_der(&pem_der("rsa-private.pem")),
    )
    .unwrap();
    assert_accepted(&s, &real, "jku/x5u ignored").await;
    // A JWKS with two RSA keys and a token without kid cannot choose: refused.
    let dir = tempfile::tempdir().unwrap();
    let mut set: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    let mut second = set["keys"][0].clone();
    second["kid"] = json!("rsa-2");
    set["keys"].as_array_mut().unwrap().push(second);
    let path = dir.path().join("two.json");
    std::fs::write(&path, set.to_string()).unwrap();
    let mut auth = auth_config();
    auth.jwks_file = Some(path);
    let s = server_with(kind, auth).await;
    let no_kid = rs256(&alice, "rsa-private.pem", None);
    assert_refused_everywhere(&s, &no_kid, "no kid, two keys").await;
    assert_accepted(
        &s,
        &rs256(&alice, "rsa-private.pem", Some("rsa-2")),
        "kid rsa-2",
    )
    .await;
}

/// 6.4.10: tokens in the query string are never read; `Authorization: Basic` is not a token;
/// a bare `Bearer` and two different tokens are refused.
async fn query_string_tokens_and_other_schemes(kind: StoreKind) {
    let s = server(kind).await;
    let t = token("alice");
    let required = err(
        "unauthorized",
        "Authentication required: send a token in X-ZUMO-AUTH or Authorization: Bearer",
    );
    for query in [format!("x-zumo-auth={t}"), format!("access_token={t}")] {
        let r = s.get(&format!("/tables/Todo?{query}")).await;
        assert_eq!((r.status, &r.body), (401, &required), "{query}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        // On the anonymous table the query token is simply ignored.
        let r = s.get(&format!("/tables/Public?{query}")).await;
        assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    }
    let basic = |path: &str| {
        send(
            s.req(Method::GET, path)
                .header("Authorization", "Basic YWxpY2U6cGFzc3dvcmQ="),
        )
    };
    let r = basic("/tables/Todo").await;
    assert_eq!((r.status, &r.body), (401, &required));
    assert_eq!(basic("/tables/Public").await.status, 200);
    for bare in ["Bearer", "Bearer ", "bearer"] {
        let r = send(
            s.req(Method::GET, "/tables/Public")
                .header("Authorization", bare),
        )
        .await;
        assert_refused(&r, &format!("bare {bare:?}"));
    }
    let r = send(
        s.req(Method::GET, "/tables/Public")
            .header("X-ZUMO-AUTH", &t)
            .header("Authorization", format!("Bearer {}", token("bob"))),
    )
    .await;
    assert_refused(&r, "two different tokens");
}

/// 6.4.11: an HMAC secret under 32 bytes, inline or from the environment, keeps the server
/// from starting; so does a JWKS file holding a symmetric key.
async fn short_secrets_keep_the_server_from_starting(kind: StoreKind) {
    let db = crate::fresh_database(kind).await;
    let open = |auth: AuthConfig| {
        let mut config: Config = toml::from_str(TABLES).unwrap();
        config.auth = Some(auth);
        Server::open(config.with_database(db.url()))
    };
    let e = open(AuthConfig::with_secret("0000"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("4 bytes long; at least 32 bytes"), "{e}");
    let mut from_env = auth_config();
    from_env.hmac_secret = None;
    from_env.hmac_secret_env = Some("TABLESYNC_TEST_UNSET_SECRET_VAR".into());
    let e = open(from_env).await.err().unwrap().to_string();
    assert!(
        e.contains("TABLESYNC_TEST_UNSET_SECRET_VAR is not set"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oct.json");
    std::fs::write(&path, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
    let mut oct = auth_config();
    oct.jwks_file = Some(path);
    let e = open(oct).await.err().unwrap().to_string();
    assert!(e.contains("symmetric (oct) key"), "{e}");
    // The TOML path reports the same.
    let toml = format!("[auth]\nhmac_secret = \"short\"\n{TABLES}");
    let e = Config::from_toml_str(&toml).unwrap_err().to_string();
    assert!(e.contains("at least 32 bytes"), "{e}");
}

/// 6.3.2: a presented but invalid token is 401 on every operation of every table, before the
/// API-version check and before any body check; a disabled operation is 405 first.
async fn an_invalid_token_is_401_on_every_route(kind: StoreKind) {
    let toml = format!(
        "{TABLES}\n[[tables]]\nname = \"ReadOnly\"\naccess = {{ read = \"anonymous\", default = \"disabled\" }}\n"
    );
    let config = tables_with(&toml, auth_config());
    let s = TestServer::with_clock(kind, config, tokens::clock()).await;
    let expired = hs256(&with(claims("alice"), "exp", Some(json!(NOW - 3600))));
    for table in ["Todo", "Public", "ReadOnly"] {
        let item = format!("/tables/{table}/x");
        let list = format!("/tables/{table}");
        let requests = [
            (Method::GET, list.as_str()),
            (Method::POST, list.as_str()),
            (Method::GET, item.as_str()),
            (Method::PATCH, item.as_str()),
            (Method::DELETE, item.as_str()),
            (Method::POST, item.as_str()),
        ];
        for (method, path) in requests {
            let disabled = table == "ReadOnly" && method != Method::GET;
            // No API version and a body that is not JSON: the token is judged first.
            let r = send(
                s.client
                    .request(method.clone(), format!("{}{path}", s.base))
                    .header("X-ZUMO-AUTH", &expired)
                    .header("Content-Type", "application/json")
                    .body("{not json"),
            )
            .await;
            if disabled {
                assert_eq!(r.status, 405, "{method} {path}: {:?}", r.body);
            } else {
                assert_refused(&r, &format!("{method} {path}"));
            }
        }
    }
    // Anonymous, the API version is checked after access: 401 on the per-user table, 400 on
    // the anonymous one.
    let r = send(s.client.get(format!("{}/tables/Todo", s.base))).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    let r = send(s.client.get(format!("{}/tables/Public", s.base))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // With a valid token, a bad body is 400, not 401.
    let r = send(
        s.req(Method::POST, "/tables/Todo")
            .header("X-ZUMO-AUTH", token("alice"))
            .header("Content-Type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}

/// Without `[auth]` tokens are not read at all (the server behaves as before): even a garbage
/// token is ignored.
async fn without_auth_tokens_are_ignored(kind: StoreKind) {
    let s = TestServer::start(kind).await;
    let r = send(
        s.req(Method::GET, "/tables/TodoItem")
            .header("X-ZUMO-AUTH", "garbage")
            .header("Authorization", "Bearer x.y.z"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

crate::store_tests!(
    valid_tokens_of_every_algorithm_are_accepted,
    alg_none_is_refused,
    rsa_public_key_as_hmac_secret_is_refused,
    algorithms_off_the_allow_list_are_refused,
    expiry_and_not_before_boundaries,
    a_token_expires_when_the_clock_passes_exp_plus_leeway,
    wrong_or_missing_issuer_and_audience_are_refused,
    tampered_and_malformed_tokens_are_refused,
    odd_user_ids_are_refused,
    unknown_kids_and_key_urls_do_not_pick_keys,
    query_string_tokens_and_other_schemes,
    short_secrets_keep_the_server_from_starting,
    an_invalid_token_is_401_on_every_route,
    without_auth_tokens_are_ignored,
);
