//! Protocol headers and query keys: the API version gate, ETag <-> version, `__includeDeleted`
//! (protocol.md 1.1, 1.2, 3.3, 3.4).

/// Header (and query key, matched case-insensitively) carrying the protocol version.
pub const ZUMO_API_VERSION: &str = "ZUMO-API-VERSION";
/// The protocol version this crate implements and clients send.
pub const SUPPORTED_API_VERSION: &str = "2.0.0";
/// Query key asking a list to include soft-deleted rows.
pub const INCLUDE_DELETED: &str = "__includeDeleted";

/// Whether `v` matches `^2\.0\.\d+$`, the versions both official servers accept.
pub fn is_supported_api_version(v: &str) -> bool {
    v.strip_prefix("2.0.")
        .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
}

/// The `ETag` / `If-Match` value for a version: `"` + version with `"` escaped as `\"` + `"`.
pub fn etag_from_version(version: &str) -> String {
    let mut s = String::with_capacity(version.len() + 2);
    s.push('"');
    s.push_str(&version.replace('"', "\\\""));
    s.push('"');
    s
}

/// The version carried by an `ETag` / `If-Match` value: the inverse of [`etag_from_version`].
///
/// Surrounding whitespace is ignored. A value that is not wrapped in double quotes is returned
/// as it is, because the official Node server matches `If-Match: Mw==` as well as `"Mw=="`.
/// `*` gets no special meaning (the official server compares it as a version too).
pub fn version_from_etag(etag: &str) -> String {
    let t = etag.trim();
    match t.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\""),
        None => t.to_string(),
    }
}

/// The versions listed in an `If-Match` value (RFC 9110: `*` or a comma-separated list of
/// entity tags), each unquoted by [`version_from_etag`]; `*` stays `*`.
///
/// Commas inside a quoted tag (after `\` escapes) do not split it, and empty members
/// (`"a", , "b"`) are skipped, as the RFC's list syntax allows. A value without any comma is one
/// tag, quoted or not, exactly as [`version_from_etag`] reads it.
pub fn if_match_versions(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                let member = &value[start..i];
                if !member.trim().is_empty() {
                    out.push(version_from_etag(member));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let member = &value[start..];
    if !member.trim().is_empty() || out.is_empty() {
        out.push(version_from_etag(member));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version() {
        assert!(is_supported_api_version("2.0.0"));
        assert!(is_supported_api_version("2.0.9"));
        assert!(is_supported_api_version("2.0.123"));
        for bad in [
            "",
            "2.0",
            "2.0.",
            "2.1.0",
            "3.0.0",
            "2.0.0-beta",
            "2x0x0",
            " 2.0.0",
            "1.0.0",
        ] {
            assert!(!is_supported_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn if_match_lists() {
        assert_eq!(if_match_versions("\"MQ==\""), ["MQ=="]);
        assert_eq!(if_match_versions("Mw=="), ["Mw=="]);
        assert_eq!(if_match_versions("*"), ["*"]);
        assert_eq!(if_match_versions("\"a\", \"b\""), ["a", "b"]);
        assert_eq!(if_match_versions("\"a\" ,*"), ["a", "*"]);
        assert_eq!(if_match_versions("\"a,b\", , \"c\\\"d\""), ["a,b", "c\"d"]);
        assert_eq!(if_match_versions(""), [""]);
    }

    #[test]
    fn etags() {
        assert_eq!(etag_from_version("MQ=="), "\"MQ==\"");
        assert_eq!(etag_from_version("a\"b"), "\"a\\\"b\"");
        assert_eq!(version_from_etag("\"MQ==\""), "MQ==");
        assert_eq!(version_from_etag(" \"MQ==\" "), "MQ==");
        assert_eq!(version_from_etag("Mw=="), "Mw==");
        assert_eq!(version_from_etag("*"), "*");
        assert_eq!(version_from_etag("\""), "\"");
        for v in ["", "AAAAAAAAB9E=", "a\"b\"c", "\"", "x\\y"] {
            assert_eq!(version_from_etag(&etag_from_version(v)), v);
        }
    }
}
