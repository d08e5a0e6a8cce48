//! The baseline record of each device: typed fields + raw values + the source of each field.

pub mod baseline;
pub mod field;
pub mod mdm_side;
pub mod run;
pub mod session;

pub use baseline::Baseline;
pub use field::{Field, Source, Via};
pub use run::{
    AttachedDevice, DeviceProbe, Failure, FailureKind, HostError, ProbeOptions, ProbeStatus,
    list_all, probe_all, probe_device,
};
pub use session::{Answered, SessionCache};
