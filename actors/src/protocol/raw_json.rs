//! A JSON value kept as the text the client wrote: an offer's or answer's `sdp` and a trickled
//! `candidate` are relayed without being decoded and encoded again. The parse of the frame
//! checks the value's syntax and copies its text once; the frame for the target embeds that
//! text as it is (an SDP of 1.5 KB is neither unescaped nor escaped again on the way, and a
//! candidate object is not built into a tree). The receiver reads the same JSON value the
//! sender wrote, escapes and all.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One JSON value, as text whose syntax has been checked.
#[derive(Clone, Debug)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Checks `text` as one JSON value and keeps it (for text that comes from elsewhere than a
    /// client's frame, such as a peer node's link).
    pub fn parse(text: String) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(text).map(RawJson)
    }

    /// Like [`parse`](Self::parse), for a value that must be a JSON string (an SDP); `None`
    /// when it is not JSON or not a string.
    pub fn parse_string(text: String) -> Option<RawJson> {
        RawJson::parse(text).ok().filter(RawJson::is_string)
    }

    /// The JSON string that encodes `s`.
    pub fn string(s: &str) -> RawJson {
        RawJson::of(&s)
    }

    /// The JSON encoding of `value`.
    pub fn of(value: &impl Serialize) -> RawJson {
        // Encoding a serializable value as JSON text does not fail for the types used here
        // (strings and JSON values).
        RawJson(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// The value's JSON text, as written.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Whether the value is a JSON string.
    pub fn is_string(&self) -> bool {
        self.as_str().starts_with('"')
    }

    /// The string the value encodes, when it is a JSON string (unescaped).
    pub fn decoded_string(&self) -> Option<String> {
        serde_json::from_str(self.as_str()).ok()
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawJson, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(RawJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_goes_out_as_it_came_in() {
        // An escape the encoder would not write (`\u0041`) stays as the client wrote it.
        let raw: RawJson = serde_json::from_str(r#""v=0\r\n\u0041""#).expect("a string");
        assert!(raw.is_string());
        assert_eq!(serde_json::to_string(&raw).expect("json"), r#""v=0\r\n\u0041""#);
        assert_eq!(raw.decoded_string().as_deref(), Some("v=0\r\nA"));
    }

    #[test]
    fn text_from_elsewhere_is_checked() {
        assert!(RawJson::parse(r#"{"candidate":"c"}"#.into()).is_ok());
        assert!(RawJson::parse(r#"{"candidate":"#.into()).is_err());
        assert!(!RawJson::parse("17".into()).expect("a number").is_string());
        assert!(RawJson::parse_string("17".into()).is_none(), "JSON, not a string");
        assert!(RawJson::parse_string(r#""v=0"#.into()).is_none(), "not JSON");
        assert_eq!(RawJson::parse_string(r#""v=0""#.into()).map(|s| s.decoded_string()), Some(Some("v=0".into())));
        assert_eq!(RawJson::string("a\"b").as_str(), r#""a\"b""#);
    }
}
