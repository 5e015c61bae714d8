use compact_str::CompactString;

use crate::domain::nhs_number::NhsNumber;

/// A checked field value, typed by its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Empty,
    /// Held inline when short: no allocation for most values.
    Text(CompactString),
    Integer(i64),
    Decimal(f64),
    Date(chrono::NaiveDate),
    DateTime(chrono::DateTime<chrono::FixedOffset>),
    Bool(bool),
    Nhs(NhsNumber),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The value as text, for comparing with codes a rule names; `None` when empty.
    pub fn to_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self {
            Value::Empty => None,
            Value::Text(s) => Some(Cow::Borrowed(s.as_str())),
            Value::Integer(n) => Some(n.to_string().into()),
            Value::Decimal(n) => Some(n.to_string().into()),
            Value::Date(d) => Some(d.to_string().into()),
            Value::DateTime(d) => Some(d.to_rfc3339().into()),
            Value::Bool(b) => Some(b.to_string().into()),
            Value::Nhs(n) => Some(n.digits().into()),
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Integer(n) => Some(*n as f64),
            Value::Decimal(n) => Some(*n),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Value::Empty)
    }
}
