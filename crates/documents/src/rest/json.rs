//! Strict reading of REST JSON bodies.
//!
//! Google's JSON front end accepts both the lowerCamelCase and the
//! snake_case spelling of every field, and a body could repeat a key. A
//! classifier that read only `allDescendants` while Firestore honoured
//! `all_descendants` would authorize the wrong query, so here every key is
//! normalised to lowerCamelCase, unknown keys are refused in the objects
//! Latchkey interprets, and a key given twice (in either spelling) is
//! refused outright.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use crate::error::ClassifyError;

/// Parses a JSON body, refusing duplicate keys. An empty (or all
/// whitespace) body is `{}`.
pub(crate) fn parse_strict(body: &[u8]) -> Result<Json, ClassifyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Object(Map::new()));
    }
    serde_json::from_slice::<Strict>(body)
        .map(|s| s.0)
        .map_err(|e| ClassifyError::Json(e.to_string()))
}

struct Strict(Json);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format_args!("duplicate key `{k}`")));
            }
            out.insert(k, v);
        }
        Ok(Json::Object(out))
    }
}

/// `update_mask` → `updateMask`, the proto3 JSON name of a field.
pub(crate) fn to_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// One JSON object of a protobuf message, keys normalised to lowerCamelCase.
#[derive(Debug)]
pub(crate) struct JsonObj<'a> {
    map: BTreeMap<&'static str, &'a Json>,
    label: String,
}

impl<'a> JsonObj<'a> {
    /// Reads `v` as an object whose fields are among `known` (given in
    /// lowerCamelCase). `label` names the object in errors.
    pub(crate) fn new(
        v: &'a Json,
        label: &str,
        known: &[&'static str],
    ) -> Result<Self, ClassifyError> {
        let Json::Object(obj) = v else {
            return Err(ClassifyError::Invalid {
                field: label_or_body(label),
                reason: "expected a JSON object".into(),
            });
        };
        let mut map = BTreeMap::new();
        for (k, v) in obj {
            let camel = to_camel(k);
            let Some(name) = known.iter().find(|n| **n == camel) else {
                return Err(ClassifyError::Invalid {
                    field: join(label, k),
                    reason: "unknown field".into(),
                });
            };
            if map.insert(*name, v).is_some() {
                return Err(ClassifyError::Invalid {
                    field: join(label, name),
                    reason: "given twice (in camelCase and snake_case)".into(),
                });
            }
        }
        Ok(Self {
            map,
            label: label.to_owned(),
        })
    }

    /// The keys present (including ones whose value is `null`).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.map.keys().copied()
    }

    /// A field's value; `null` counts as absent, as in proto3 JSON.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Json> {
        self.map.get(key).copied().filter(|v| !v.is_null())
    }

    /// The label of one field, for errors.
    pub(crate) fn field(&self, key: &str) -> String {
        join(&self.label, key)
    }

    fn invalid(&self, key: &str, reason: &str) -> ClassifyError {
        ClassifyError::Invalid {
            field: self.field(key),
            reason: reason.to_owned(),
        }
    }

    /// A string field.
    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, ClassifyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(key, "expected a string")),
        }
    }

    /// A bool field (`true`, or the string `"true"`, as protobuf accepts).
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ClassifyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(Json::String(s)) if s == "true" => Ok(Some(true)),
            Some(Json::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => Err(self.invalid(key, "expected true or false")),
        }
    }

    /// A nested message.
    pub(crate) fn obj(
        &self,
        key: &str,
        known: &[&'static str],
    ) -> Result<Option<JsonObj<'a>>, ClassifyError> {
        self.get(key)
            .map(|v| JsonObj::new(v, &self.field(key), known))
            .transpose()
    }

    /// A repeated field (empty when absent).
    pub(crate) fn array(&self, key: &str) -> Result<&'a [Json], ClassifyError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Json::Array(items)) => Ok(items),
            Some(_) => Err(self.invalid(key, "expected an array")),
        }
    }

    /// A map field (a JSON object with free-form keys).
    pub(crate) fn map(&self, key: &str) -> Result<Option<&'a Map<String, Json>>, ClassifyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.invalid(key, "expected an object")),
        }
    }

    /// A repeated string field.
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<&'a str>, ClassifyError> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.invalid(key, "expected strings"))
            })
            .collect()
    }

    /// A bytes field: base64, standard or URL-safe, padded or not. Empty is `None`.
    pub(crate) fn bytes(&self, key: &str) -> Result<Option<Bytes>, ClassifyError> {
        match self.str(key)? {
            None | Some("") => Ok(None),
            Some(s) => decode_base64(s)
                .map(Some)
                .ok_or_else(|| self.invalid(key, "expected base64")),
        }
    }
}

fn join(label: &str, key: &str) -> String {
    if label.is_empty() {
        key.to_owned()
    } else {
        format!("{label}.{key}")
    }
}

fn label_or_body(label: &str) -> String {
    if label.is_empty() {
        "request body".to_owned()
    } else {
        label.to_owned()
    }
}

/// Decodes base64 the way proto3 JSON allows: standard or URL-safe
/// alphabet, with or without padding.
pub(crate) fn decode_base64(s: &str) -> Option<Bytes> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = s.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .ok()
        .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        assert_eq!(parse_strict(b"").unwrap(), serde_json::json!({}));
        assert_eq!(parse_strict(b" \n").unwrap(), serde_json::json!({}));
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"x":{"a":1,"a":2}}"#).is_err());
        assert!(parse_strict(br#"[{"a":1,"a":1}]"#).is_err());
        assert!(parse_strict(br#"{"a":1} x"#).is_err());
        assert_eq!(
            parse_strict(br#"{"a":[1,"b",null,true,1.5,{"c":{}}]}"#).unwrap(),
            serde_json::json!({"a":[1,"b",null,true,1.5,{"c":{}}]})
        );
    }

    #[test]
    fn both_spellings() {
        assert_eq!(to_camel("update_mask"), "updateMask");
        assert_eq!(to_camel("updateMask"), "updateMask");
        assert_eq!(to_camel("all_descendants"), "allDescendants");
        let v = serde_json::json!({"all_descendants": true, "collectionId": "c"});
        let o = JsonObj::new(&v, "from[0]", &["collectionId", "allDescendants"]).unwrap();
        assert_eq!(o.bool("allDescendants").unwrap(), Some(true));
        let v = serde_json::json!({"all_descendants": true, "allDescendants": false});
        let e = JsonObj::new(&v, "from[0]", &["allDescendants"]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let v = serde_json::json!({"allDescendant": true});
        let e = JsonObj::new(&v, "from[0]", &["allDescendants"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `from[0].allDescendant`: unknown field"
        );
    }

    #[test]
    fn base64_forms() {
        for s in ["+/8=", "+/8", "-_8=", "-_8"] {
            assert_eq!(decode_base64(s).unwrap().as_ref(), &[0xfb, 0xff], "{s}");
        }
        assert!(decode_base64("!!").is_none());
    }
}
