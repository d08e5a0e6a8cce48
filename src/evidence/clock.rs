//! Device clocks that jump: noticed by comparing how far a device's clock (lockdown
//! `TimeIntervalSince1970`, as libimobiledevice's `idevicedate` reads it) moved between two
//! probes with how far it should have moved. A clock set by hand, a time-zone or NTP step, or a
//! simulated clock jump all matter to an OS update: the 1–3 AM "Later" install window and the
//! deferral periods are read off the device's clock (rdar 45414727, briefs/field.md).

/// Below this a difference is probe jitter, not a jump (seconds of device time).
pub const MIN_JUMP_SECS: f64 = 120.0;

/// How much a device clock jumped between two readings, in seconds (positive: forward), or
/// `None` when it moved as expected. `real_elapsed_s` is the host time between the readings,
/// `scale` how many device seconds pass per host second (1 on a real bench; a simulated lab's
/// speed). The tolerance grows with the expected advance, since each reading is taken at an
/// uncertain moment within a probe.
pub fn clock_jump(real_elapsed_s: f64, device_elapsed_s: f64, scale: f64) -> Option<f64> {
    if !(real_elapsed_s.is_finite() && device_elapsed_s.is_finite() && scale.is_finite()) {
        return None;
    }
    let expected = real_elapsed_s.max(0.0) * scale.max(0.0);
    let jump = device_elapsed_s - expected;
    (jump.abs() > MIN_JUMP_SECS + 0.25 * expected).then_some(jump)
}

/// `+3h 0m 12s`, `-45m 0s`: a jump for people.
pub fn describe(secs: f64) -> String {
    let sign = if secs < 0.0 { '-' } else { '+' };
    let s = secs.abs().round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{sign}{h}h {m}m {s}s")
    } else {
        format!("{sign}{m}m {s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_that_keeps_time_is_not_a_jump() {
        assert_eq!(clock_jump(10.0, 10.5, 1.0), None);
        // A simulated lab at 600×: 0.2 s of host time is 120 s of device time.
        assert_eq!(clock_jump(0.2, 118.0, 600.0), None);
        assert_eq!(
            clock_jump(2.0, 1250.0, 600.0),
            None,
            "within a quarter of the advance"
        );
    }

    #[test]
    fn forward_and_backward_jumps_are_found_with_their_size() {
        let j = clock_jump(0.2, 120.0 + 3.0 * 3600.0, 600.0).unwrap();
        assert!((j - 10800.0).abs() < 1.0, "{j}");
        let j = clock_jump(60.0, 60.0 - 1800.0, 1.0).unwrap();
        assert!((j + 1800.0).abs() < 1.0, "{j}");
        assert_eq!(describe(10800.4), "+3h 0m 0s");
        assert_eq!(describe(-1800.0), "-30m 0s");
    }

    #[test]
    fn nonsense_readings_are_not_jumps() {
        assert_eq!(clock_jump(f64::NAN, 5.0, 1.0), None);
        assert_eq!(clock_jump(1.0, f64::INFINITY, 1.0), None);
    }
}
