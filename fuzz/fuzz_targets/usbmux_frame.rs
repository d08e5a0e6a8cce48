//! usbmuxd frames: `frame::decode` on arbitrary bytes, then every decoded payload through the
//! plist parser and the `Listen`/`ListDevices` readers (`MuxEvent`, `DeviceEntry`).
#![no_main]

use lab::plist_util;
use lab::usbmux::frame;
use lab::usbmux::message::{DeviceEntry, MuxEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // A stream of frames, as `read_frame` would see them one after another.
    while let Ok(Some((f, used))) = frame::decode(rest) {
        assert!(used >= frame::HEADER_LEN && used <= rest.len());
        assert_eq!(used, f.header.length as usize);
        if let Ok(d) = plist_util::parse_dict(&f.payload) {
            let _ = MuxEvent::from_plist(&d);
            let _ = DeviceEntry::from_attached(&d);
            // A DeviceList reply: every entry goes through the same reader.
            if let Some(list) = d.get("DeviceList").and_then(plist::Value::as_array) {
                for e in list.iter().filter_map(plist::Value::as_dictionary) {
                    let _ = DeviceEntry::from_attached(e);
                }
            }
        }
        rest = &rest[used..];
    }
    // The whole input as a bare plist too (the payload without a header).
    if let Ok(d) = plist_util::parse_dict(data) {
        let _ = MuxEvent::from_plist(&d);
        let _ = DeviceEntry::from_attached(&d);
    }
});
