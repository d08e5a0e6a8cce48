//! Hand-built journals for the outcome, detector and report tests.

use crate::journal::{Entry, Event, Reason};
use crate::mdm::report::report_dict;
use crate::plist_util::dict_to_xml;
use base64::Engine;
use plist::{Dictionary, Value};
use serde_json::json;

pub const SHA: &str = "5ha256";

#[derive(Default)]
pub struct J {
    pub entries: Vec<Entry>,
    t: i64,
}

pub fn b64(d: Dictionary) -> String {
    base64::engine::general_purpose::STANDARD.encode(dict_to_xml(d))
}

pub fn probe(udid: &str, version: &str, build: &str) -> serde_json::Value {
    let f = |v: serde_json::Value, domain: serde_json::Value, key: &str| json!({"value": v, "raw": v, "source": {"via": "lockdown", "domain": domain, "key": key}});
    json!({
        "host": "UNIX:/var/run/usbmuxd", "device_id": 1, "udid": udid, "status": "ok",
        "elapsed_ms": 12,
        "baseline": {
            "udid": f(json!(udid), json!(null), "UniqueDeviceID"),
            "serial_number": f(json!(format!("SN-{udid}")), json!(null), "SerialNumber"),
            "device_name": f(json!(format!("iPhone {udid}")), json!(null), "DeviceName"),
            "product_type": f(json!("iPhone10,3"), json!(null), "ProductType"),
            "product_version": f(json!(version), json!(null), "ProductVersion"),
            "build_version": f(json!(build), json!(null), "BuildVersion"),
            "disk": {"amount_data_available": f(json!(12_000_000_000u64), json!("com.apple.disk_usage"), "AmountDataAvailable")},
            "battery": {
                "current_capacity": f(json!(87), json!("com.apple.mobile.battery"), "BatteryCurrentCapacity"),
                "is_charging": {"value": null, "raw": null, "source": {"via": "lockdown", "domain": "com.apple.mobile.battery", "key": "BatteryIsCharging"}, "error": "key absent from the device's reply"}
            },
            "supervision": {"device_is_chaperoned": f(json!(true), json!("com.apple.mobile.chaperone"), "DeviceIsChaperoned")},
            "usb": {"host": "UNIX:/var/run/usbmuxd", "device_id": 1}
        },
        "mdm": {
            "os_version": {"value": version, "raw": version, "source": {"via": "mdm", "domain": "DeviceInformation", "key": "OSVersion"}},
            "battery_level": {"value": 0.87, "raw": 0.87, "source": {"via": "mdm", "domain": "DeviceInformation", "key": "BatteryLevel"}},
            "commands": []
        }
    })
}

impl J {
    pub fn new() -> J {
        let mut j = J::default();
        j.push(Event::RunStarted {
            schema: crate::journal::SCHEMA_VERSION,
            trial_id: "t1".into(),
            protocol_sha256: SHA.into(),
            lab_version: "0.1.0".into(),
            time_scale: None,
            simulated: false,
        });
        j
    }

    pub fn at(&self) -> String {
        chrono::DateTime::from_timestamp(1_700_000_000 + self.t, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// Advance the clock by `s` seconds.
    pub fn wait(&mut self, s: i64) -> &mut Self {
        self.t += s;
        self
    }

    pub fn push(&mut self, event: Event) -> &mut Self {
        let seq = self.entries.len() as u64 + 1;
        let at = self.at();
        self.entries.push(Entry { seq, at, event });
        self.t += 1;
        self
    }

    /// Discovered, baselined, assessed (target 15.8 / 19H390 when eligible).
    pub fn device(&mut self, udid: &str, eligible: bool) -> &mut Self {
        self.push(Event::DeviceDiscovered {
            udid: udid.into(),
            host: "UNIX:/var/run/usbmuxd".into(),
            device_id: 1,
        });
        self.push(Event::BaselineRecorded {
            udid: udid.into(),
            probe: probe(udid, "15.7", "19H12"),
        });
        let reasons = if eligible {
            vec![]
        } else {
            vec![
                Reason {
                    rule: "supervised".into(),
                    message: "not supervised".into(),
                    values: serde_json::Value::Null,
                },
                Reason {
                    rule: "free_disk".into(),
                    message: "3.2 GB free; 6 GB needed".into(),
                    values: json!({"free": 3.2e9}),
                },
            ]
        };
        let target = if eligible {
            json!({"product_key": "iOSUpdate19H390", "version": "15.8", "build": "19H390",
                   "download_size": 1000, "install_size": 2000})
        } else {
            serde_json::Value::Null
        };
        self.push(Event::EligibilityAssessed {
            udid: udid.into(),
            eligible,
            reasons,
            target,
        })
    }

    pub fn allocate(&mut self, udid: &str, arm: &str) -> &mut Self {
        self.push(Event::Allocated {
            udid: udid.into(),
            arm: arm.into(),
            seed: 7,
        })
    }

    pub fn consent(&mut self, udids: &[&str]) -> &mut Self {
        self.push(Event::ConsentGiven {
            by: crate::journal::ConsentBy::Flag,
            udids: udids.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn intent(&mut self, udid: &str, step: u32, uuid: &str, action: &str) -> &mut Self {
        self.push(Event::DoseIntent {
            udid: udid.into(),
            arm: "a".into(),
            step,
            command_uuid: uuid.into(),
            request_type: "ScheduleOSUpdate".into(),
            install_action: Some(action.parse().expect("an Apple InstallAction")),
            starting_build: "19H12".into(),
            command_b64: "AAAA".into(),
            mdm_store: None,
        })
    }

    pub fn enqueued(&mut self, udid: &str, uuid: &str) -> &mut Self {
        self.push(Event::DoseEnqueued {
            udid: udid.into(),
            command_uuid: uuid.into(),
            pushed: Some(true),
            push_error: None,
        })
    }

    /// Intent + enqueue of step `step`.
    pub fn dose(&mut self, udid: &str, step: u32, uuid: &str) -> &mut Self {
        self.intent(udid, step, uuid, "Default")
            .enqueued(udid, uuid)
    }

    pub fn result(
        &mut self,
        udid: &str,
        uuid: &str,
        request_type: Option<&str>,
        status: &str,
        fill: impl FnOnce(&mut Dictionary),
    ) -> &mut Self {
        let mut d = report_dict(udid, Some(uuid), status);
        fill(&mut d);
        let received_at = self.at();
        self.push(Event::MdmResult {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: request_type.map(str::to_string),
            status: status.into(),
            raw_b64: b64(d),
            received_at,
        })
    }

    /// A ScheduleOSUpdate answer with one UpdateResults item.
    pub fn schedule_answer(&mut self, udid: &str, uuid: &str, status: &str) -> &mut Self {
        self.result(udid, uuid, Some("ScheduleOSUpdate"), status, |d| {
            let mut item = Dictionary::new();
            item.insert("ProductKey".into(), "iOSUpdate19H390".into());
            item.insert("InstallAction".into(), "DownloadOnly".into());
            item.insert("Status".into(), "Downloading".into());
            d.insert(
                "UpdateResults".into(),
                Value::Array(vec![Value::Dictionary(item)]),
            );
        })
    }

    /// An OSUpdateStatus answer; `downloaded` as the given plist value.
    pub fn status(&mut self, udid: &str, uuid: &str, pct: f64, downloaded: Value) -> &mut Self {
        self.status_with(udid, uuid, pct, downloaded, "Downloading")
    }

    /// An OSUpdateStatus query and its answer: one item with this `Status`.
    pub fn status_with(
        &mut self,
        udid: &str,
        uuid: &str,
        pct: f64,
        downloaded: Value,
        status: &str,
    ) -> &mut Self {
        self.push(Event::CommandSent {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: "OSUpdateStatus".into(),
        });
        self.result(udid, uuid, None, "Acknowledged", |d| {
            let mut item = Dictionary::new();
            item.insert("ProductKey".into(), "iOSUpdate19H390".into());
            item.insert("IsDownloaded".into(), downloaded);
            item.insert("DownloadPercentComplete".into(), Value::Real(pct));
            item.insert("Status".into(), status.into());
            d.insert(
                "OSUpdateStatus".into(),
                Value::Array(vec![Value::Dictionary(item)]),
            );
        })
    }

    pub fn device_info(&mut self, udid: &str, uuid: &str, version: &str, build: &str) -> &mut Self {
        self.result(udid, uuid, Some("DeviceInformation"), "Acknowledged", |d| {
            let mut q = Dictionary::new();
            q.insert("OSVersion".into(), version.into());
            q.insert("BuildVersion".into(), build.into());
            d.insert("QueryResponses".into(), Value::Dictionary(q));
        })
    }

    pub fn reprobe(&mut self, udid: &str, attached: bool, build: Option<&str>) -> &mut Self {
        self.push(Event::DeviceReprobed {
            udid: udid.into(),
            attached,
            product_version: build.map(|b| if b == "19H390" { "15.8" } else { "15.7" }.to_string()),
            build_version: build.map(str::to_string),
            error: (!attached).then(|| "device not attached".to_string()),
            network: None,
            network_source: None,
        })
    }

    pub fn ended(&mut self, udid: &str, reason: &str) -> &mut Self {
        self.push(Event::FollowUpEnded {
            udid: udid.into(),
            reason: reason.into(),
        })
    }

    /// The enforcement declaration `Identifier` `uuid` for `target` with this deadline, as JSON.
    pub fn declaration(uuid: &str, target: &str, deadline: &str) -> String {
        json!({
            "Type": crate::mdm::ddm::ENFORCEMENT_SPECIFIC,
            "Identifier": uuid,
            "ServerToken": "t1",
            "Payload": {"TargetOSVersion": target, "TargetLocalDateTime": deadline},
        })
        .to_string()
    }

    /// A DDM dose (intent + enqueue): the enforcement declaration for `target` (DDM brief §2).
    pub fn ddm_dose(&mut self, udid: &str, uuid: &str, target: &str, deadline: &str) -> &mut Self {
        let json = J::declaration(uuid, target, deadline);
        self.push(Event::DoseIntent {
            udid: udid.into(),
            arm: "a".into(),
            step: 1,
            command_uuid: uuid.into(),
            request_type: crate::mdm::ddm::ENFORCEMENT_SPECIFIC.into(),
            install_action: None,
            starting_build: "19H12".into(),
            command_b64: base64::engine::general_purpose::STANDARD.encode(json),
            mdm_store: None,
        })
        .enqueued(udid, uuid)
    }

    /// A DDM status report with these `StatusItems` (JSON), received now.
    pub fn ddm_report(&mut self, udid: &str, items: serde_json::Value) -> &mut Self {
        let body = json!({"StatusItems": items, "Errors": [], "FullReport": false}).to_string();
        let received_at = self.at();
        let id = format!("r{}", self.entries.len() + 1);
        self.push(Event::DdmStatusReport {
            udid: udid.into(),
            report_id: id,
            received_at: Some(received_at),
            raw_b64: base64::engine::general_purpose::STANDARD.encode(body),
        })
    }

    /// A status report of `softwareupdate.install-state` alone.
    pub fn ddm_state(&mut self, udid: &str, state: &str) -> &mut Self {
        self.ddm_report(udid, json!({"softwareupdate": {"install-state": state}}))
    }
}
