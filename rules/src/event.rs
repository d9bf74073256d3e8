//! The event side of the engine: what a rule can ask of an event.

use std::borrow::Cow;
use std::fmt;

/// One field value, as the engine sees it.
///
/// Strings are borrowed from the event whenever the event stores them as text;
/// an [`Event`] that has to build a string (for example to format an address)
/// returns [`Cow::Owned`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A JSON `null` or an explicitly empty value. Sigma's `null` matches it,
    /// and so does a missing field.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for [`Value::Int`].
    UInt(u64),
    /// A floating point number.
    Float(f64),
    /// Text.
    Str(Cow<'a, str>),
    /// A list of values (a JSON array, say `process.args`): a rule value
    /// matches the list when it matches one of its elements.
    List(Vec<Value<'a>>),
}

impl Value<'_> {
    /// The value as a number, if it is one or is text that parses as one.
    #[must_use]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            Value::Str(s) => parse_number(s),
            Value::Null | Value::Bool(_) | Value::List(_) => None,
        }
    }
}

impl fmt::Display for Value<'_> {
    /// Writes the value the way string matching sees it: numbers in decimal,
    /// booleans as `true`/`false`, `null` as the empty string and lists as
    /// their elements joined with `, `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses decimal integers and floats, and `0x` hexadecimal integers, the way
/// the numeric modifiers (`lt`, `gte`, ...) read text fields.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// What the engine needs from an event.
///
/// Implement it for the appliance's own event type to evaluate rules without
/// converting events to JSON first. Field names are the names rules use after
/// field mapping (for the Linux sensor: the Sysmon-for-Linux names, `Image`,
/// `CommandLine`, ...).
pub trait Event {
    /// The value of a field, or `None` if the event has no such field.
    fn field(&self, name: &str) -> Option<Value<'_>>;

    /// Calls `visit` with every value of the event, for keyword searches
    /// (detections that are plain lists of strings, with no field name).
    /// `visit` returns `true` to stop early.
    ///
    /// Keyword search is defined as: a keyword matches if it matches, as a
    /// substring (with its wildcards), any one field value of the event. The
    /// default visits nothing, so keyword rules never fire on such events.
    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        let _ = visit;
    }
}

impl<E: Event + ?Sized> Event for &E {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        (**self).field(name)
    }
    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        (**self).for_each_value(visit);
    }
}

/// JSON objects are events. A field name is looked up as a key first; if
/// there is none and the name contains dots, as a path through nested objects
/// (`process.parent.executable` for ECS); then, as a last resort, as a key
/// that differs only in ASCII letter case (Windows field names are not used
/// consistently in rules, and SQL-based tools treat them as case-insensitive).
impl Event for serde_json::Value {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        let serde_json::Value::Object(map) = self else {
            return None;
        };
        json_object_field(map, name)
    }

    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        visit_json(self, visit);
    }
}

impl Event for serde_json::Map<String, serde_json::Value> {
    fn field(&self, name: &str) -> Option<Value<'_>> {
        json_object_field(self, name)
    }

    fn for_each_value(&self, visit: &mut dyn FnMut(&Value<'_>) -> bool) {
        for v in self.values() {
            if visit_json(v, visit) {
                return;
            }
        }
    }
}

/// Up to this many keys, one pass over the map that looks for the exact
/// key and remembers the first ASCII-case-insensitive one is cheaper than
/// hashing the name (and, when the field is missing, scanning anyway).
const LINEAR_LOOKUP_MAX: usize = 32;

fn json_object_field<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<Value<'a>> {
    let mut folded_hit = None;
    if map.len() <= LINEAR_LOOKUP_MAX {
        let first = name.as_bytes().first().map(u8::to_ascii_lowercase);
        for (k, v) in map {
            // Length and first letter before comparing whole keys: most
            // keys differ there, and a call to memcmp costs more.
            if k.len() != name.len() || k.as_bytes().first().map(u8::to_ascii_lowercase) != first {
                continue;
            }
            if k == name {
                return Some(json_value(v));
            }
            if folded_hit.is_none() && k.eq_ignore_ascii_case(name) {
                folded_hit = Some(v);
            }
        }
    } else if let Some(v) = map.get(name) {
        return Some(json_value(v));
    }
    if name.contains('.') {
        let mut cur = map;
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            let v = cur.get(part)?;
            if parts.peek().is_none() {
                return Some(json_value(v));
            }
            match v {
                serde_json::Value::Object(inner) => cur = inner,
                _ => return None,
            }
        }
    }
    if map.len() <= LINEAR_LOOKUP_MAX {
        return folded_hit.map(json_value);
    }
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| json_value(v))
}

fn json_value(v: &serde_json::Value) -> Value<'_> {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::Str(Cow::Borrowed(s)),
        serde_json::Value::Array(items) => Value::List(items.iter().map(json_value).collect()),
        // A nested object asked for by its own name is seen as its JSON text,
        // as the oracle stores it.
        serde_json::Value::Object(_) => Value::Str(Cow::Owned(v.to_string())),
    }
}

/// Returns `true` when the visitor asked to stop.
fn visit_json(v: &serde_json::Value, visit: &mut dyn FnMut(&Value<'_>) -> bool) -> bool {
    match v {
        serde_json::Value::Object(map) => map.values().any(|v| visit_json(v, visit)),
        serde_json::Value::Array(items) => items.iter().any(|v| visit_json(v, visit)),
        other => visit(&json_value(other)),
    }
}
