//! What the runner is handed to reach the lab: usbmuxd addresses, an MDM backend and the lab's
//! time scale. The command line builds it (`cli::lab_connection`): it starts an in-process
//! simulated lab or reads a bench's addresses and MDM credentials, so the runner neither builds
//! the simulated lab nor knows whether the devices behind the sockets are real (issue 12, point
//! 4; the harness reaches a simulated lab exactly as it reaches a bench).

use crate::mdm::backend::MdmBackend;
use crate::mdm::webhook_receiver::WebhookReceiver;
use crate::usbmux::UsbmuxAddr;

pub struct LabConnection {
    /// The usbmuxd sockets the devices are behind.
    pub addrs: Vec<UsbmuxAddr>,
    /// The MDM the doses go through and its records are read from.
    pub backend: Box<dyn MdmBackend>,
    /// Simulated seconds per real second (a simulated lab's speed; 1 on a bench unless the
    /// protocol says otherwise): follow-up intervals and clock readings are scaled by it.
    pub time_scale: f64,
    /// The command line started the simulated lab these sockets lead to (the journal and the
    /// reports say so). The runner still reaches it only through them.
    pub simulated: bool,
    /// The webhook listener a NanoMDM or MicroMDM backend reads from, kept alive with the
    /// connection.
    pub webhook: Option<WebhookReceiver>,
    /// An in-process lab's embedded MDM as (URL, API key, number of devices): the baseline
    /// waits until that many devices have enrolled before it probes.
    pub enrolled_check: Option<(String, String, usize)>,
    /// Where DDM doses go and their status is read (`None`: the MDM speaks no DDM the harness
    /// knows, and a DDM arm's devices are excluded as `ddm_active` unknown).
    pub ddm: Option<Box<dyn crate::mdm::ddm_doses::DdmDoses>>,
}
