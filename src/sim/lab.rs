//! The simulated lab's state: its devices, which are attached, their usbmuxd ids, pair records,
//! and the attach/detach event stream that `Listen` clients follow.
//!
//! Timed attach/detach follow the fleet: `attach_after`, `detach_after` (counted from the
//! attach), and `reattach_after` (counted from the detach; usbmuxd gives the device a fresh
//! DeviceID, as a re-plug does). Detaching is USB only: the device's MDM client
//! ([`super::mdm_device`]) goes on checking in over the network while it is unplugged.

use super::fleet::SimDeviceSpec;
use super::identity::{self, DeviceIdentity};
use super::values;
use crate::usbmux::message::{DeviceEntry, MuxEvent};
use plist::Dictionary;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// One simulated device.
pub struct SimDevice {
    pub spec: SimDeviceSpec,
    pub identity: DeviceIdentity,
    /// Values by domain (`None` = global). They change when the device updates (new
    /// ProductVersion/BuildVersion) or its disk fills with a download.
    domains: RwLock<Vec<(Option<String>, Dictionary)>>,
    /// The spec as it is now (version, build, disk free after an update).
    live: RwLock<SimDeviceSpec>,
    buid: String,
    /// Bumped on every detach, so that open lockdown connections drop like a pulled cable.
    pub detached: watch::Sender<u64>,
    /// USB location as Linux usbmuxd reports it: `(bus << 16) | address` (brief §1.5).
    pub location_id: u64,
    /// How many lockdown sessions the device has started (StartSession accepted): tests read it
    /// to tell a kept session from a new one per re-probe.
    pub sessions_started: AtomicU64,
}

impl SimDevice {
    pub fn domain(&self, name: Option<&str>) -> Option<Dictionary> {
        self.domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(d, _)| d.as_deref() == name)
            .map(|(_, v)| v.clone())
    }

    /// The device's current state.
    pub fn live(&self) -> SimDeviceSpec {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change the device's state; lockdown answers follow.
    pub fn update_live(&self, f: impl FnOnce(&mut SimDeviceSpec)) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        f(&mut live);
        let d = values::domains(&live, &self.identity.public_key_pem, &self.buid);
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = d;
    }
}

struct State {
    /// usbmuxd DeviceID of each attached device, by index into `devices`.
    attached: HashMap<usize, u32>,
    next_device_id: u32,
    /// Pair records saved by clients (`SavePairRecord`), by UDID; they override the generated.
    saved_pair_records: HashMap<String, Vec<u8>>,
}

pub struct SimLab {
    pub devices: Vec<Arc<SimDevice>>,
    pub buid: String,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Simulated time (OS-update progress, the 1–3 AM install window).
    pub clock: super::clock::VirtualClock,
    /// The fleet's seed (quirk draws, identities).
    pub seed: u64,
    state: Mutex<State>,
    events: broadcast::Sender<MuxEvent>,
    /// The lab's network to its MDM: at most [`MDM_EXCHANGES_AT_ONCE`] device requests in
    /// flight at once (each device's own order is kept; the others wait their turn).
    pub mdm_network: tokio::sync::Semaphore,
}

/// How many device → MDM requests (check-ins, reports, SCEP) a simulated lab has in flight at
/// once. Without a bound, 10 000 devices enrolling at start (or woken by one round of pushes)
/// opened 10 000 connections at the same instant: 20 000 descriptors in one process with the
/// embedded server's ends, past a common limit, and every request failed and was retried
/// (issue 16). A real bench's devices do not all reach their MDM in the same millisecond either.
pub const MDM_EXCHANGES_AT_ONCE: usize = 512;

impl SimLab {
    /// Build the lab (generates certificates: blocking, a fraction of a second).
    pub fn new(
        specs: Vec<SimDeviceSpec>,
        seed: u64,
        speed: f64,
        start: chrono::DateTime<chrono::Utc>,
    ) -> Result<Arc<SimLab>, identity::IdentityError> {
        Self::new_with_jumps(specs, seed, speed, start, Vec::new())
    }

    /// As [`SimLab::new`], with a clock that jumps (`clock.jumps` of the fleet).
    pub fn new_with_jumps(
        specs: Vec<SimDeviceSpec>,
        seed: u64,
        speed: f64,
        start: chrono::DateTime<chrono::Utc>,
        jumps: Vec<super::clock::ClockJump>,
    ) -> Result<Arc<SimLab>, identity::IdentityError> {
        let buid = identity::uuid_from(seed, "system-buid");
        let ids = identity::generate(seed, &buid, &specs)?;
        let devices = specs
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(i, (spec, identity))| {
                let domains = values::domains(&spec, &identity.public_key_pem, &buid);
                let (detached, _) = watch::channel(0);
                // Spread devices over buses 1.. with 100 addresses each.
                let bus = 1 + (i / 100) as u64;
                let address = 2 + (i % 100) as u64;
                Arc::new(SimDevice {
                    live: RwLock::new(spec.clone()),
                    spec,
                    identity,
                    domains: RwLock::new(domains),
                    buid: buid.clone(),
                    detached,
                    location_id: (bus << 16) | address,
                    sessions_started: AtomicU64::new(0),
                })
            })
            .collect();
        let (events, _) = broadcast::channel(4096);
        Ok(Arc::new(SimLab {
            devices,
            buid,
            speed: if speed > 0.0 { speed } else { 1.0 },
            clock: super::clock::VirtualClock::new(start, speed).with_jumps(jumps),
            seed,
            state: Mutex::new(State {
                attached: HashMap::new(),
                next_device_id: 1,
                saved_pair_records: HashMap::new(),
            }),
            events,
            mdm_network: tokio::sync::Semaphore::new(MDM_EXCHANGES_AT_ONCE),
        }))
    }

    fn entry(&self, index: usize, device_id: u32) -> DeviceEntry {
        let d = &self.devices[index];
        DeviceEntry {
            device_id,
            serial_number: d.spec.udid.clone(),
            product_id: Some(crate::models::usb_product_id_for_class(&d.spec.device_class) as u32),
            location_id: Some(d.location_id),
            connection_type: "USB".into(),
            connection_speed: Some(480_000_000),
        }
    }

    /// Attach every device that has no `attach_after`, schedule the timed attach, detach and
    /// reattach, and log each clock jump when it happens.
    pub fn start(self: &Arc<Self>) {
        for j in self.clock.jumps() {
            let real = self.real(j.after);
            let by = j.by;
            tokio::spawn(async move {
                tokio::time::sleep(real).await;
                tracing::info!(by_seconds = by.num_seconds(), "simulated clock jumped");
            });
        }
        for (i, d) in self.devices.iter().enumerate() {
            match d.spec.attach_after {
                None => {
                    self.attach(i);
                }
                Some(after) => {
                    let lab = self.clone();
                    let real = self.real(after);
                    tokio::spawn(async move {
                        tokio::time::sleep(real).await;
                        lab.attach(i);
                    });
                }
            }
            if let Some(after) = d.spec.detach_after {
                let lab = self.clone();
                let detach_at = after.saturating_add(d.spec.attach_after.unwrap_or_default());
                let reattach = d.spec.reattach_after.map(|r| self.real(r));
                let real = self.real(detach_at);
                tokio::spawn(async move {
                    tokio::time::sleep(real).await;
                    lab.detach(i);
                    if let Some(back) = reattach {
                        tokio::time::sleep(back).await;
                        lab.attach(i);
                    }
                });
            }
        }
    }

    /// Simulated duration → real duration at this lab's speed.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.speed)
    }

    /// Attach a device (no-op when attached). usbmuxd gives it a fresh DeviceID, as a re-plug does.
    pub fn attach(&self, index: usize) -> Option<u32> {
        let mut st = self.state.lock().expect("lab state lock");
        if st.attached.contains_key(&index) || index >= self.devices.len() {
            return None;
        }
        let id = st.next_device_id;
        st.next_device_id += 1;
        st.attached.insert(index, id);
        let _ = self.events.send(MuxEvent::Attached(self.entry(index, id)));
        tracing::info!(udid = %self.devices[index].spec.udid, device_id = id, "simulated device attached");
        Some(id)
    }

    pub fn detach(&self, index: usize) -> Option<u32> {
        let mut st = self.state.lock().expect("lab state lock");
        let id = st.attached.remove(&index)?;
        self.devices[index].detached.send_modify(|g| *g += 1);
        let _ = self.events.send(MuxEvent::Detached { device_id: id });
        tracing::info!(udid = %self.devices[index].spec.udid, device_id = id, "simulated device detached");
        Some(id)
    }

    pub fn index_of(&self, udid: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.spec.udid == udid)
    }

    /// Current device list, in DeviceID order.
    pub fn list(&self) -> Vec<DeviceEntry> {
        let st = self.state.lock().expect("lab state lock");
        let mut v: Vec<_> = st
            .attached
            .iter()
            .map(|(i, id)| self.entry(*i, *id))
            .collect();
        v.sort_by_key(|e| e.device_id);
        v
    }

    /// Subscribe to events and get the current list at the same instant (no event is missed).
    pub fn subscribe(&self) -> (Vec<DeviceEntry>, broadcast::Receiver<MuxEvent>) {
        let st = self.state.lock().expect("lab state lock");
        let rx = self.events.subscribe();
        let mut v: Vec<_> = st
            .attached
            .iter()
            .map(|(i, id)| self.entry(*i, *id))
            .collect();
        v.sort_by_key(|e| e.device_id);
        (v, rx)
    }

    /// The attached device with this usbmuxd DeviceID.
    pub fn by_device_id(&self, device_id: u32) -> Option<Arc<SimDevice>> {
        let st = self.state.lock().expect("lab state lock");
        st.attached
            .iter()
            .find(|(_, id)| **id == device_id)
            .map(|(i, _)| self.devices[*i].clone())
    }

    /// The pair record usbmuxd holds for a UDID: one a client saved, else the generated one
    /// (unless the fleet says the device was never paired).
    pub fn pair_record(&self, udid: &str) -> Option<Vec<u8>> {
        let st = self.state.lock().expect("lab state lock");
        if let Some(r) = st.saved_pair_records.get(udid) {
            return Some(r.clone());
        }
        let d = self.devices.iter().find(|d| d.spec.udid == udid)?;
        d.spec
            .paired
            .then(|| d.identity.pair_record.to_plist_bytes())
    }

    pub fn save_pair_record(&self, udid: &str, data: Vec<u8>) {
        let mut st = self.state.lock().expect("lab state lock");
        st.saved_pair_records.insert(udid.to_string(), data);
    }

    pub fn delete_pair_record(&self, udid: &str) -> bool {
        let mut st = self.state.lock().expect("lab state lock");
        st.saved_pair_records.remove(udid).is_some()
    }

    /// The HostIDs this device accepts in StartSession: its generated pair record's, and any
    /// saved by a client that paired.
    pub fn accepted_host_ids(&self, dev: &SimDevice) -> Vec<String> {
        let mut v = vec![dev.identity.pair_record.host_id.clone()];
        let st = self.state.lock().expect("lab state lock");
        if let Some(bytes) = st.saved_pair_records.get(&dev.spec.udid)
            && let Ok(r) = crate::lockdown::PairRecord::from_bytes(bytes)
        {
            v.push(r.host_id);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn a_reattached_device_comes_back_with_a_fresh_device_id() {
        let text = "devices:\n  - name: Unplugged\n    product_type: iPhone12,1\n    ios: { version: \"17.5.1\", build: 21F90 }\n    disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 80 }\n    detach_after: 2s\n    reattach_after: 3s\n";
        let specs = super::super::fleet::parse(Path::new("f.yaml"), text).unwrap();
        // 100× speed: detach after 20 ms, back 30 ms later.
        let lab = SimLab::new(specs, 1, 100.0, chrono::Utc::now()).unwrap();
        let (now, mut rx) = lab.subscribe();
        assert!(now.is_empty());
        lab.start();
        async fn next(rx: &mut broadcast::Receiver<MuxEvent>) -> MuxEvent {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event in time")
                .expect("event")
        }
        let MuxEvent::Attached(first) = next(&mut rx).await else {
            panic!("attached first")
        };
        let MuxEvent::Detached { device_id } = next(&mut rx).await else {
            panic!("then detached")
        };
        assert_eq!(device_id, first.device_id);
        assert!(lab.list().is_empty());
        let MuxEvent::Attached(again) = next(&mut rx).await else {
            panic!("then attached again")
        };
        assert_eq!(again.serial_number, first.serial_number);
        assert_ne!(
            again.device_id, first.device_id,
            "a re-plug gets a new DeviceID"
        );
        assert_eq!(lab.list(), vec![again]);
    }
}
