//! Formatting of journal values into report cells, shared by the reports and the anomaly
//! detectors' evidence lines. Plumbing, so that `evidence` (which `report` builds on) need not
//! import `report` to print a value the same way (issue 12: no arrow both ways).

/// A JSON value as a cell: strings as is, integers as integers, other numbers with 3 decimals,
/// null as empty, anything else as compact JSON.
pub(crate) fn json_cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => format!("{:.3}", n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "1 device", "2 devices": a count with its noun (regular plurals only).
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::{count, json_cell};

    #[test]
    fn a_count_says_one_device_and_two_devices() {
        assert_eq!(count(0, "device"), "0 devices");
        assert_eq!(count(1, "device"), "1 device");
        assert_eq!(count(2, "device"), "2 devices");
    }
    use serde_json::json;

    #[test]
    fn cells_read_like_the_reports_always_printed_them() {
        assert_eq!(json_cell(&json!(null)), "");
        assert_eq!(json_cell(&json!(true)), "true");
        assert_eq!(json_cell(&json!(42)), "42");
        assert_eq!(json_cell(&json!(-7)), "-7");
        assert_eq!(json_cell(&json!(0.5)), "0.500");
        assert_eq!(json_cell(&json!("17.5.1")), "17.5.1");
        assert_eq!(json_cell(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    }
}
