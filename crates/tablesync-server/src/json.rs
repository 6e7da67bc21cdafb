//! Request JSON, read strictly: an object that names a key twice is refused.
//!
//! RFC 8259 leaves the meaning of a repeated name open, and serde_json keeps the last value, so
//! `{"text":"a","text":"b"}` would store `"b"` without a word while another JSON reader takes
//! `"a"`. A sync client that sends such a body has a bug we should name, not guess around. The
//! rest is serde_json's own reading (its errors, its nesting limit), only the objects are built
//! here.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// `bytes` as one JSON value; an error, in serde_json's words, for invalid JSON, for anything
/// after the value, and for a key repeated within one object (at any depth).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut reader)?;
    reader.end()?;
    Ok(value)
}

/// Reads a [`Value`] as serde_json does, refusing repeated keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text holds no NaN or infinity, so this is always a number.
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One lookup a key: the entry both detects the repeat and takes the value.
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(StrictValue)?);
                }
                Entry::Occupied(taken) => {
                    return Err(de::Error::custom(format_args!(
                        "the key {} appears twice in one object",
                        Value::String(taken.key().clone())
                    )));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_repeated_key_is_named_at_any_depth() {
        for (body, key) in [
            (r#"{"text":"a","text":"b"}"#, "text"),
            (r#"{"id":"x","meta":{"k":1,"k":2}}"#, "k"),
            (r#"{"requests":[{"body":{"a\u0062":1,"ab":2}}]}"#, "ab"),
        ] {
            let e = parse_strict(body.as_bytes()).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "the key \"{key}\" appears twice in one object at line 1"
                )),
                "{body}: {e}"
            );
        }
        // The same name in two different objects is fine.
        let ok = parse_strict(br#"{"a":{"k":1},"b":{"k":2},"k":[{"k":3},{"k":4}]}"#).unwrap();
        assert_eq!(ok["b"]["k"], 2);
    }

    #[test]
    fn other_errors_are_serde_jsons() {
        for body in ["", "{\"text\":", "{} x", "[1,", "{\"a\" 1}", "nul"] {
            let ours = parse_strict(body.as_bytes()).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(body).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{body:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        let ours = parse_strict(deep.as_bytes()).unwrap_err().to_string();
        let theirs = serde_json::from_str::<Value>(&deep)
            .unwrap_err()
            .to_string();
        assert_eq!(ours, theirs);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Without repeated keys (a `Value` has none) the strict reading is serde_json's.
        #[test]
        fn values_without_repeats_read_as_serde_json_reads_them(v in json_value()) {
            let text = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(parse_strict(&text).unwrap(), serde_json::from_slice::<Value>(&text).unwrap());
        }
    }
}
