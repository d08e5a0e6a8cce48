//! The `update:` section of a fleet device as YAML, and its conversion to an [`UpdateConfig`].

use super::*;

// ---------------------------------------------------------------------------------------------
// Spec types (YAML, to be embedded in the fleet file)
// ---------------------------------------------------------------------------------------------

/// The `update:` section of a fleet device:
///
/// ```yaml
/// update:
///   catalogue:
///     - { version: "17.6", build: 21G80, download_size: 6.4 GB, install_size: 2.9 GB }
///     - { version: "18.0", build: 22A3354, download_size: 7 GB, install_size: 3 GB,
///         product_types: ["iPhone12,1"], is_critical: false, restart_required: true,
///         allows_install_later: true, product_key: iOSUpdate22A3354 }
///   user: { approve: { after: 30s } }  # later | never | { defer: { times: 2, then: later } }
///   download_rate: 20 MB               # per simulated second
///   install_duration: 10m
///   restart_duration: 3m
///   defer_interval: 1h
///   unlock_after_restart: 1m           # passcode devices; absent = default 1m
///   dep_enrolled: false
///   unlocked_since_boot: true
///   local_offset_minutes: 120          # device local time = UTC + 2 h
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBehaviourSpec {
    /// `None` (absent): the fleet's top-level catalogue; `Some([])`: nothing is offered.
    #[serde(default)]
    pub catalogue: Option<Vec<CatalogEntrySpec>>,
    #[serde(default = "default_user")]
    pub user: UserBehaviourSpec,
    pub download_rate: Option<Bytes>,
    pub install_duration: Option<DurationSpec>,
    pub restart_duration: Option<DurationSpec>,
    pub defer_interval: Option<DurationSpec>,
    pub unlock_after_restart: Option<DurationSpec>,
    #[serde(default)]
    pub dep_enrolled: bool,
    #[serde(default = "yes")]
    pub unlocked_since_boot: bool,
    #[serde(default)]
    pub local_offset_minutes: i32,
}

impl Default for UpdateBehaviourSpec {
    fn default() -> Self {
        UpdateBehaviourSpec {
            catalogue: None,
            user: default_user(),
            download_rate: None,
            install_duration: None,
            restart_duration: None,
            defer_interval: None,
            unlock_after_restart: None,
            dep_enrolled: false,
            unlocked_since_boot: true,
            local_offset_minutes: 0,
        }
    }
}

fn default_user() -> UserBehaviourSpec {
    UserBehaviourSpec::Approve { after: None }
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntrySpec {
    pub version: String,
    pub build: String,
    pub product_key: Option<String>,
    pub download_size: Bytes,
    pub install_size: Bytes,
    pub product_types: Option<Vec<String>>,
    #[serde(default)]
    pub is_critical: bool,
    #[serde(default = "yes")]
    pub restart_required: bool,
    #[serde(default)]
    pub allows_install_later: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserBehaviourSpec {
    /// `{ approve: { after: 30s } }`; `after` defaults to 0.
    Approve {
        after: Option<DurationSpec>,
    },
    /// `{ defer: { times: 2, then: later } }`
    Defer {
        times: u32,
        then: Box<UserBehaviourSpec>,
    },
    Later,
    Never,
}

impl UserBehaviourSpec {
    pub fn to_behaviour(&self) -> UserBehaviour {
        match self {
            UserBehaviourSpec::Approve { after } => UserBehaviour::Approve {
                after: after.map(|d| d.0).unwrap_or_default(),
            },
            UserBehaviourSpec::Defer { times, then } => UserBehaviour::Defer {
                times: *times,
                then: Box::new(then.to_behaviour()),
            },
            UserBehaviourSpec::Later => UserBehaviour::Later,
            UserBehaviourSpec::Never => UserBehaviour::Never,
        }
    }
}

impl CatalogEntrySpec {
    pub fn to_entry(&self) -> Result<CatalogEntry, String> {
        Version::parse(&self.version)
            .map_err(|e| format!("catalogue version {:?}: {e}", self.version))?;
        if self.build.trim().is_empty() {
            return Err(format!(
                "catalogue entry {:?} has an empty build",
                self.version
            ));
        }
        Ok(CatalogEntry {
            version: self.version.clone(),
            build: self.build.clone(),
            product_key: self
                .product_key
                .clone()
                .unwrap_or_else(|| format!("iOSUpdate{}", self.build)),
            download_size: self.download_size.0,
            install_size: self.install_size.0,
            product_types: self.product_types.clone(),
            is_critical: self.is_critical,
            restart_required: self.restart_required,
            allows_install_later: self.allows_install_later,
        })
    }
}

impl UpdateBehaviourSpec {
    /// Checked runtime configuration; the error names the offending field.
    pub fn config(&self) -> Result<UpdateConfig, String> {
        let d = Timing::default();
        let rate = self.download_rate.map(|b| b.0).unwrap_or(d.download_rate);
        if rate == 0 {
            return Err("download_rate must be above 0".into());
        }
        Ok(UpdateConfig {
            catalogue: self
                .catalogue
                .iter()
                .flatten()
                .map(CatalogEntrySpec::to_entry)
                .collect::<Result<_, _>>()?,
            user: self.user.to_behaviour(),
            timing: Timing {
                download_rate: rate,
                install: self.install_duration.map(|x| x.0).unwrap_or(d.install),
                restart: self.restart_duration.map(|x| x.0).unwrap_or(d.restart),
                defer_interval: self.defer_interval.map(|x| x.0).unwrap_or(d.defer_interval),
                unlock_after_restart: self
                    .unlock_after_restart
                    .map(|x| x.0)
                    .or(d.unlock_after_restart),
            },
        })
    }
}
