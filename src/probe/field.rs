//! A baseline field: the typed value, the raw value as the device sent it, and where it came
//! from. A value that could not be read is recorded as missing with the reason — never
//! defaulted.

use crate::plist_util::{self, type_name};
use plist::Value;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// lockdownd `GetValue` (domain + key).
    Lockdown,
    /// An MDM command's answer (domain = the command, key = the response key).
    Mdm,
    /// usbmuxd's device entry.
    Usbmuxd,
    /// The raw USB scan.
    Usb,
    /// Computed by `lab` from another field (e.g. the marketing name from `ProductType`).
    Derived,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub via: Via,
    /// lockdown domain; `null` for the global domain.
    pub domain: Option<String>,
    pub key: String,
}

impl Source {
    pub fn lockdown(domain: Option<&str>, key: &str) -> Self {
        Source {
            via: Via::Lockdown,
            domain: domain.map(str::to_string),
            key: key.to_string(),
        }
    }
    pub fn other(via: Via, key: &str) -> Self {
        Source {
            via,
            domain: None,
            key: key.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field<T> {
    pub value: Option<T>,
    /// The value exactly as received (plist types visible: `{"$data": …}` for data).
    pub raw: Option<serde_json::Value>,
    pub source: Source,
    /// Why the value is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the device sent another type than documented and `lab` read it leniently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl<T> Field<T> {
    pub fn missing(source: Source, error: impl Into<String>) -> Self {
        Field {
            value: None,
            raw: None,
            source,
            error: Some(error.into()),
            note: None,
        }
    }

    pub fn known(source: Source, value: T, raw: serde_json::Value) -> Self {
        Field {
            value: Some(value),
            raw: Some(raw),
            source,
            error: None,
            note: None,
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }
}

/// Types a baseline field can have, with strict and lenient readings of a plist value.
pub trait FieldType: Sized {
    const NAME: &'static str;
    fn strict(v: &Value) -> Option<Self>;
    /// A reading of a value of another type, when it is unambiguous (`1` for `true`, …).
    fn lenient(v: &Value) -> Option<Self>;
}

impl FieldType for String {
    const NAME: &'static str = "string";
    fn strict(v: &Value) -> Option<Self> {
        v.as_string().map(str::to_string)
    }
    fn lenient(v: &Value) -> Option<Self> {
        match v {
            Value::Integer(i) => Some(i.to_string()),
            Value::Real(r) => Some(r.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl FieldType for u64 {
    const NAME: &'static str = "integer";
    fn strict(v: &Value) -> Option<Self> {
        match v {
            Value::Integer(i) => i.as_unsigned(),
            _ => None,
        }
    }
    fn lenient(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => s.trim().parse().ok(),
            Value::Real(r) if *r >= 0.0 && r.fract() == 0.0 => Some(*r as u64),
            _ => None,
        }
    }
}

impl FieldType for f64 {
    const NAME: &'static str = "real";
    fn strict(v: &Value) -> Option<Self> {
        match v {
            Value::Real(r) => Some(*r),
            _ => None,
        }
    }
    fn lenient(v: &Value) -> Option<Self> {
        match v {
            Value::Integer(i) => i.as_signed().map(|x| x as f64),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl FieldType for bool {
    const NAME: &'static str = "boolean";
    fn strict(v: &Value) -> Option<Self> {
        v.as_boolean()
    }
    fn lenient(v: &Value) -> Option<Self> {
        match v {
            Value::Integer(i) => match i.as_signed() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Read a field from an optional plist value.
pub fn read<T: FieldType>(source: Source, v: Option<&Value>, absent: &str) -> Field<T> {
    let Some(v) = v else {
        return Field::missing(source, absent);
    };
    let raw = plist_util::to_json(v);
    if let Some(x) = T::strict(v) {
        return Field::known(source, x, raw);
    }
    match T::lenient(v) {
        Some(x) => Field {
            note: Some(format!(
                "documented as {}, device sent {}",
                T::NAME,
                type_name(v)
            )),
            ..Field::known(source, x, raw)
        },
        None => Field {
            value: None,
            raw: Some(raw),
            source,
            error: Some(format!(
                "expected {}, device sent {}",
                T::NAME,
                type_name(v)
            )),
            note: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source::lockdown(Some("com.apple.mobile.battery"), "BatteryIsCharging")
    }

    #[test]
    fn strict_lenient_and_missing() {
        let f: Field<bool> = read(src(), Some(&Value::Boolean(true)), "absent");
        assert_eq!(f.value, Some(true));
        assert!(f.note.is_none());
        let f: Field<bool> = read(src(), Some(&Value::Integer(1.into())), "absent");
        assert_eq!(f.value, Some(true));
        assert_eq!(
            f.note.as_deref(),
            Some("documented as boolean, device sent integer")
        );
        assert_eq!(f.raw, Some(serde_json::json!(1)));
        let f: Field<bool> = read(src(), Some(&Value::Data(vec![9])), "absent");
        assert_eq!(f.value, None);
        assert!(f.error.unwrap().contains("sent data"));
        let f: Field<u64> = read(src(), None, "MissingValue");
        assert_eq!(f.value, None);
        assert_eq!(f.error.as_deref(), Some("MissingValue"));
    }
}
