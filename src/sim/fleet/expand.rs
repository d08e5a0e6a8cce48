//! A parsed fleet file to its devices: every entry checked where it is written (file, line,
//! column), `count` expanded, and what the file leaves out (UDID, serial, MACs, model number)
//! generated from the fleet's seed and the device's name.

use super::{DeviceSpec, FleetFile, MDM_FAULT_REQUEST_TYPES, MdmFault, SimDeviceSpec};
use crate::input::InputError;
use crate::models::{self, Model};
use crate::sim::os_update::CatalogEntrySpec;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn mac(bytes: &[u8]) -> String {
    // Locally administered unicast address, so it never collides with a real vendor's.
    let mut b = [0u8; 6];
    b.copy_from_slice(&bytes[..6]);
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

const SERIAL_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Expand a parsed fleet file into devices, generating what it leaves out from `f.seed` (so a
/// caller that overrides the seed, as `lab sim serve --seed` does, sets it before expanding).
pub fn expand(path: &Path, f: FleetFile) -> Result<Vec<SimDeviceSpec>, InputError> {
    if f.devices.is_empty() {
        return Err(InputError::at(path, None, "the fleet has no devices"));
    }
    f.clock_start(path)?;
    f.clock_jumps(path)?;
    // The shared catalogue is checked where it is written, not at the first device using it.
    for e in &f.catalogue {
        if let Err(m) = e.value.to_entry() {
            return Err(InputError::at(path, Some(e.referenced), m));
        }
    }
    let catalogue: Vec<CatalogEntrySpec> = f.catalogue.iter().map(|e| e.value.clone()).collect();
    let mut seen = Seen::default();
    let mut out = Vec::new();
    for spanned in &f.devices {
        let entry = Entry::check(path, spanned)?;
        for i in 1..=spanned.value.count {
            out.push(entry.device(i, f.seed, &catalogue, &mut seen)?);
        }
    }
    Ok(out)
}

/// Names and UDIDs already given: each may be used once in a fleet.
#[derive(Default)]
struct Seen {
    names: HashSet<String>,
    udids: HashSet<String>,
}

/// One checked entry of the file, before `count` is expanded.
struct Entry<'a> {
    path: &'a Path,
    at: serde_saphyr::Location,
    d: &'a DeviceSpec,
    model: Option<&'static Model>,
    class: String,
    mdm_fault: Option<MdmFault>,
}

impl<'a> Entry<'a> {
    fn err(&self, m: String) -> InputError {
        InputError::at(
            self.path,
            Some(self.at),
            format!("device {:?}: {m}", self.d.name),
        )
    }

    /// Every check of one entry, in the order its errors are reported.
    fn check(path: &'a Path, spanned: &'a Spanned<DeviceSpec>) -> Result<Entry<'a>, InputError> {
        let d = &spanned.value;
        let mut e = Entry {
            path,
            at: spanned.referenced,
            d,
            model: models::lookup(&d.product_type),
            class: String::new(),
            mdm_fault: None,
        };
        e.check_counts_and_sizes()?;
        e.check_reattach()?;
        e.mdm_fault = e.check_mdm_fault()?;
        e.class = e.check_class()?;
        Ok(e)
    }

    fn check_counts_and_sizes(&self) -> Result<(), InputError> {
        let d = self.d;
        if d.count == 0 {
            return Err(self.err("count must be at least 1".into()));
        }
        if d.count > 100_000 {
            return Err(self.err(format!("count {} is more than 100000", d.count)));
        }
        if d.count > 1 && (d.udid.is_some() || d.serial.is_some()) {
            return Err(self.err("udid and serial cannot be given together with count > 1".into()));
        }
        if d.disk.free.0 > d.disk.total.0 {
            return Err(self.err(format!(
                "disk free ({} bytes) is more than disk total ({} bytes)",
                d.disk.free.0, d.disk.total.0
            )));
        }
        if d.ios.version.trim().is_empty()
            || !d.ios.version.split('.').all(|p| p.parse::<u32>().is_ok())
        {
            return Err(self.err(format!(
                "ios.version {:?} is not a version like 17.5.1",
                d.ios.version
            )));
        }
        Ok(())
    }

    fn check_reattach(&self) -> Result<(), InputError> {
        if let Some(r) = &self.d.reattach_after
            && self.d.detach_after.is_none()
        {
            return Err(InputError::at(
                self.path,
                Some(r.referenced),
                format!(
                    "device {:?}: reattach_after needs detach_after (a device comes back only after it left)",
                    self.d.name
                ),
            ));
        }
        Ok(())
    }

    fn check_mdm_fault(&self) -> Result<Option<MdmFault>, InputError> {
        let Some(m) = &self.d.mdm_fault else {
            return Ok(None);
        };
        let at = |msg: String| {
            InputError::at(
                self.path,
                Some(m.referenced),
                format!("device {:?}: mdm_fault: {msg}", self.d.name),
            )
        };
        if m.value.times == 0 {
            return Err(at(
                "times is 0, so the fault never fires; leave mdm_fault out instead".into(),
            ));
        }
        if let Some(on) = &m.value.on
            && !MDM_FAULT_REQUEST_TYPES.contains(&on.as_str())
        {
            return Err(at(format!(
                "on: {on:?} is not a RequestType the simulated device answers ({})",
                MDM_FAULT_REQUEST_TYPES.join(", ")
            )));
        }
        Ok(Some(MdmFault {
            kind: m.value.kind,
            on: m.value.on.clone(),
            times: m.value.times,
        }))
    }

    /// The device class (`data/models.csv`, else the ProductType's prefix); only an iPad can be
    /// a Shared iPad.
    fn check_class(&self) -> Result<String, InputError> {
        let d = self.d;
        let class = self
            .model
            .map(|m| m.device_class.clone())
            .unwrap_or_else(|| {
                d.product_type
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == ',')
                    .to_string()
            });
        if !["iPhone", "iPad", "iPod"].contains(&class.as_str()) {
            return Err(self.err(format!(
                "product_type {:?} is not an iPhone, iPad or iPod (e.g. iPhone12,1)",
                d.product_type
            )));
        }
        if d.shared_ipad.is_some() && class != "iPad" {
            return Err(self.err(format!(
                "shared_ipad: {:?} is an {class}; only an iPad can be a Shared iPad",
                d.product_type
            )));
        }
        Ok(class)
    }

    /// The `i`-th device of the entry (1-based), its identities generated from `seed` and its
    /// name unless the file gives them.
    fn device(
        &self,
        i: u32,
        seed: u64,
        catalogue: &[CatalogEntrySpec],
        seen: &mut Seen,
    ) -> Result<SimDeviceSpec, InputError> {
        let d = self.d;
        let name = if d.count > 1 {
            format!("{} {}", d.name, i)
        } else {
            d.name.clone()
        };
        if !seen.names.insert(name.clone()) {
            return Err(self.err(format!("device name {name:?} is used twice")));
        }
        let h = hash(&[&seed.to_le_bytes(), name.as_bytes()]);
        let chip = self.model.map(|m| m.chip_id).unwrap_or(0x8030);
        let ecid = u64::from_be_bytes(h[0..8].try_into().expect("8 bytes")) >> 8;
        let udid = self.udid(&h, chip, ecid)?;
        if !seen.udids.insert(udid.clone()) {
            return Err(self.err(format!("udid {udid} is used twice")));
        }
        let serial = d.serial.clone().unwrap_or_else(|| {
            h[8..20]
                .iter()
                .map(|b| SERIAL_ALPHABET[*b as usize % SERIAL_ALPHABET.len()] as char)
                .collect()
        });
        let mut update = d.update.clone().unwrap_or_default();
        // An empty `update.catalogue: []` is the device's own: nothing offered (issue 14).
        if update.catalogue.is_none() {
            update.catalogue = Some(catalogue.to_vec());
        }
        if let Err(m) = update.config() {
            return Err(self.err(format!("update: {m}")));
        }
        let model_number = d
            .model_number
            .clone()
            .unwrap_or_else(|| format!("M{}2", serial.chars().take(3).collect::<String>()));
        Ok(SimDeviceSpec {
            name,
            udid,
            serial,
            product_type: d.product_type.clone(),
            marketing_name: self.model.map(|m| m.marketing_name.clone()),
            hardware_model: self
                .model
                .map(|m| m.hardware_model.clone())
                .unwrap_or_else(|| "J0AP".into()),
            model_number,
            device_class: self.class.clone(),
            chip_id: chip,
            ecid,
            ios_version: d.ios.version.clone(),
            ios_build: d.ios.build.clone(),
            disk_total: d.disk.total.0,
            disk_free: d.disk.free.0,
            battery_level: d.battery.level.0,
            charging: d.battery.charging,
            external_power: d.battery.external_power,
            network: d.network,
            passcode: d.passcode,
            supervised: d.supervised,
            activation_state: d.activation_state.clone(),
            paired: d.paired,
            wifi_address: mac(&h[20..26]),
            bluetooth_address: mac(&h[26..32]),
            attach_after: d.attach_after.map(|x| x.0),
            detach_after: d.detach_after.map(|x| x.0),
            reattach_after: d.reattach_after.as_ref().map(|x| x.value.0),
            fault: d.fault,
            mdm_fault: self.mdm_fault.clone(),
            update,
            enrollment: d.enrollment,
            shared_ipad: d.shared_ipad.clone(),
            mdm_overrides: d.mdm_overrides.clone(),
        })
    }

    /// The file's UDID (checked), or one generated the way Apple forms them: `CHIPID-ECID` from
    /// the A12 (0x8020) on, 40 hex digits before.
    fn udid(&self, h: &[u8; 32], chip: u32, ecid: u64) -> Result<String, InputError> {
        match &self.d.udid {
            Some(u) => {
                let ok = (u.len() == 25 && u.as_bytes()[8] == b'-')
                    || (u.len() == 40 && u.chars().all(|c| c.is_ascii_hexdigit()));
                if !ok {
                    return Err(self.err(format!(
                        "udid {u:?} is neither 8-16 hex digits with a dash nor 40 hex digits"
                    )));
                }
                Ok(u.clone())
            }
            None if chip >= 0x8020 => Ok(format!("{chip:08X}-{ecid:016X}")),
            None => Ok(h[..20].iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}
