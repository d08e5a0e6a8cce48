//! A device's baseline probe record (`BaselineRecorded.probe`, `probe::DeviceProbe` as JSON) as
//! the record keeps it: compact JSON text, plus the few values the verdicts and the reports read
//! for every device.
//!
//! Why not the `serde_json::Value` itself: a probe record is about 7.4 KB of JSON (every field
//! with its raw value and its source), but about 80 KB as a `Value` tree, whose every small map
//! is a B-tree node sized for eleven entries. The record holds one per device for the whole run
//! (`lab run` folds as it goes), so at 10 000 devices the trees were about 835 MB, three
//! quarters of `lab report`'s peak heap (heaptrack, issue 16). As text they are 74 MB.
//!
//! Reading: [`ProbeRecord::at`] answers the paths in [`HOT`] from values kept aside and any
//! other path by parsing the text; [`ProbeRecord::value`] parses the whole record, for a
//! report row that reads many fields (one parse per device and report).

use serde_json::Value;

/// Paths read for every device by more than one report or verdict (the starting version and
/// build, the names in `report.html`'s lanes and the summary, the baseline tiles, the device
/// clock of the DDM detectors, a radar draft's device state): kept parsed, so that reading
/// them costs no parse.
pub const HOT: &[&[&str]] = &[
    &["status"],
    &["device_time"],
    &["utc_offset"],
    &["host_time"],
    &["baseline", "product_version", "value"],
    &["baseline", "build_version", "value"],
    &["baseline", "device_name", "value"],
    &["baseline", "marketing_name", "value"],
    &["baseline", "product_type", "value"],
    &["baseline", "battery", "current_capacity", "value"],
    &["baseline", "battery", "external_connected", "value"],
    &["baseline", "battery", "is_charging", "value"],
    &["baseline", "disk", "amount_data_available", "value"],
    &["baseline", "disk", "total_disk_capacity", "value"],
    &["baseline", "supervision", "device_is_chaperoned", "value"],
    &["baseline", "passcode", "password_protected", "value"],
    &["mdm", "os_version", "value"],
    &["mdm", "build_version", "value"],
    &["mdm", "model_name", "value"],
    &["mdm", "battery_level", "value"],
    &["mdm", "passcode_present", "value"],
];

/// One device's baseline probe record, compact.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRecord {
    /// The record as compact JSON (`serde_json::to_string` of what the journal held).
    json: Box<str>,
    /// The value at each [`HOT`] path, in that order (`None`: absent).
    hot: Box<[Option<Value>]>,
}

impl ProbeRecord {
    pub fn of(probe: &Value) -> ProbeRecord {
        ProbeRecord {
            json: serde_json::to_string(probe)
                .expect("a JSON value serialises")
                .into_boxed_str(),
            hot: HOT.iter().map(|p| walk(probe, p).cloned()).collect(),
        }
    }

    /// The whole record, parsed again from its text.
    pub fn value(&self) -> Value {
        // The text was written by serde_json from a `Value`: it reads back.
        serde_json::from_str(&self.json).expect("the probe record's own JSON reads back")
    }

    /// The value at `path` (object keys from the top), `None` when absent.
    pub fn at(&self, path: &[&str]) -> Option<Value> {
        match HOT.iter().position(|p| *p == path) {
            Some(i) => self.hot[i].clone(),
            None => walk(&self.value(), path).cloned(),
        }
    }
}

fn walk<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe() -> Value {
        json!({
            "status": "ok",
            "device_time": 1_764_000_000.5,
            "baseline": {
                "build_version": {"raw": "21F90", "source": {"key": "BuildVersion"}, "value": "21F90"},
                "usb": {"speed": {"value": 480}},
            },
            "mdm": null,
        })
    }

    #[test]
    fn hot_and_other_paths_read_as_the_value_does() {
        let v = probe();
        let r = ProbeRecord::of(&v);
        assert_eq!(r.value(), v, "the text reads back to the same value");
        for path in [
            &["status"][..],
            &["device_time"],
            &["baseline", "build_version", "value"],
            &["baseline", "usb", "speed", "value"],
            &["baseline", "product_version", "value"],
            &["mdm", "os_version", "value"],
            &["nothing", "here"],
        ] {
            assert_eq!(r.at(path), walk(&v, path).cloned(), "{path:?}");
        }
        assert_eq!(
            r.at(&["baseline", "usb", "speed", "value"]),
            Some(json!(480)),
            "a path not kept aside is read from the text"
        );
        assert_eq!(r.at(&["mdm", "os_version", "value"]), None, "under a null");
    }

    #[test]
    fn every_hot_path_is_kept_aside() {
        let r = ProbeRecord::of(&probe());
        assert_eq!(r.hot.len(), HOT.len());
        assert_eq!(r.hot[0], Some(json!("ok")));
    }
}
