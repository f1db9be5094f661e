//! Property values: borrowed from a batch ([`Value`]) or owned ([`OwnedValue`]).

/// A property value borrowed from the batch being processed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// A nested JSON object or array, serialized.
    Json(&'a str),
}

impl<'a> Value<'a> {
    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a whole number.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The number as `f64`, if this is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An owned copy.
    pub fn to_owned_value(&self) -> OwnedValue {
        match *self {
            Value::Null => OwnedValue::Null,
            Value::Bool(b) => OwnedValue::Bool(b),
            Value::Int(i) => OwnedValue::Int(i),
            Value::Float(f) => OwnedValue::Float(f),
            Value::Str(s) => OwnedValue::Str(s.to_owned()),
            Value::Json(s) => OwnedValue::Json(s.to_owned()),
        }
    }
}

/// An owned property value, for [`Event::set`](crate::Event::set) and
/// [`NewEvent`](crate::NewEvent).
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Any other number. NaN and infinities are sent as `null`.
    Float(f64),
    /// A string.
    Str(String),
    /// A nested JSON object or array, serialized.
    Json(String),
}

impl OwnedValue {
    /// Borrow as a [`Value`].
    pub fn as_value(&self) -> Value<'_> {
        match self {
            OwnedValue::Null => Value::Null,
            OwnedValue::Bool(b) => Value::Bool(*b),
            OwnedValue::Int(i) => Value::Int(*i),
            OwnedValue::Float(f) => Value::Float(*f),
            OwnedValue::Str(s) => Value::Str(s),
            OwnedValue::Json(s) => Value::Json(s),
        }
    }
}

impl<'a> From<Value<'a>> for OwnedValue {
    fn from(v: Value<'a>) -> Self {
        v.to_owned_value()
    }
}
impl From<&str> for OwnedValue {
    fn from(s: &str) -> Self {
        OwnedValue::Str(s.to_owned())
    }
}
impl From<String> for OwnedValue {
    fn from(s: String) -> Self {
        OwnedValue::Str(s)
    }
}
impl From<bool> for OwnedValue {
    fn from(b: bool) -> Self {
        OwnedValue::Bool(b)
    }
}
impl From<i64> for OwnedValue {
    fn from(i: i64) -> Self {
        OwnedValue::Int(i)
    }
}
impl From<i32> for OwnedValue {
    fn from(i: i32) -> Self {
        OwnedValue::Int(i.into())
    }
}
impl From<u32> for OwnedValue {
    fn from(i: u32) -> Self {
        OwnedValue::Int(i.into())
    }
}
impl From<f64> for OwnedValue {
    fn from(f: f64) -> Self {
        OwnedValue::Float(f)
    }
}
impl From<serde_json::Value> for OwnedValue {
    fn from(v: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => OwnedValue::Null,
            J::Bool(b) => OwnedValue::Bool(b),
            J::Number(n) => match n.as_i64() {
                Some(i) => OwnedValue::Int(i),
                None => OwnedValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => OwnedValue::Str(s),
            other => OwnedValue::Json(other.to_string()),
        }
    }
}
