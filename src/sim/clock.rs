//! Simulated time. The lab runs faster than real time (`speed` simulated seconds per real
//! second) so that a download that takes ten minutes on a real iPhone takes seconds in a test.
//!
//! The update state machine ([`super::os_update`]) never reads a clock itself: every call takes
//! `now` as an argument. [`Clock`] is how the caller gets that `now`: [`VirtualClock`] in the
//! running lab, [`ManualClock`] in tests, so that tests set explicit times and never sleep.

use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, NaiveDateTime, Utc};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A source of simulated "now".
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
}

/// Simulated time = `start` + real time elapsed since `origin` × `speed`.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    start: DateTime<Utc>,
    origin: Instant,
    speed: f64,
}

impl VirtualClock {
    /// Starts now (real time) at the simulated instant `start`. A non-positive or non-finite
    /// speed is taken as 1.0, like the lab's own `speed`, so time never runs backwards.
    pub fn new(start: DateTime<Utc>, speed: f64) -> Self {
        Self::with_origin(start, speed, Instant::now())
    }

    /// As [`VirtualClock::new`] with an explicit real-time origin (for tests and for several
    /// clocks that must agree).
    pub fn with_origin(start: DateTime<Utc>, speed: f64, origin: Instant) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        VirtualClock {
            start,
            origin,
            speed,
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// Simulated time at the real instant `real` (instants before the origin map to `start`).
    pub fn at(&self, real: Instant) -> DateTime<Utc> {
        let elapsed = real.saturating_duration_since(self.origin);
        after(self.start, elapsed.mul_f64(self.speed))
    }

    /// How long to wait in real time for `sim` to pass in simulated time.
    pub fn real_for(&self, sim: Duration) -> Duration {
        sim.div_f64(self.speed)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        self.at(Instant::now())
    }
}

/// A clock that only moves when told to: tests drive the state machine with it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Moves time forward by `d` and returns the new now.
    pub fn advance(&self, d: Duration) -> DateTime<Utc> {
        let mut g = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *g = after(*g, d);
        *g
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `std` duration → `chrono` duration, saturating (a simulated run never lasts 292 years).
pub fn to_chrono(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

/// `t + d`, saturating at the end of representable time instead of panicking (a spec may say
/// "never" with a huge duration).
pub fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(to_chrono(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The device's wall-clock time: UTC plus a fixed offset. A fixed offset (no DST rules) is
/// enough for the one place local time matters, the 1–3 AM "Later" install window
/// (rdar 45414727), and keeps the simulation free of time-zone data.
pub fn local_time(utc: DateTime<Utc>, offset_minutes: i32) -> NaiveDateTime {
    match FixedOffset::east_opt(offset_minutes.saturating_mul(60)) {
        Some(off) => utc.with_timezone(&off).naive_local(),
        // Out of range (more than ±24 h): treat as UTC rather than fail.
        None => utc.naive_utc(),
    }
}

/// The UTC instant of a device-local wall-clock time.
pub fn from_local(local: NaiveDateTime, offset_minutes: i32) -> DateTime<Utc> {
    let secs = FixedOffset::east_opt(offset_minutes.saturating_mul(60))
        .map(|o| o.local_minus_utc())
        .unwrap_or(0);
    DateTime::<Utc>::from_naive_utc_and_offset(local, Utc) - ChronoDuration::seconds(secs.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn virtual_clock_scales_real_time() {
        let origin = Instant::now();
        let c = VirtualClock::with_origin(t0(), 60.0, origin);
        let later = origin + Duration::from_secs(2);
        assert_eq!(c.at(later), t0() + ChronoDuration::minutes(2));
        assert_eq!(c.at(origin), t0());
        assert_eq!(
            c.real_for(Duration::from_secs(600)),
            Duration::from_secs(10)
        );
        assert_eq!(VirtualClock::new(t0(), -3.0).speed(), 1.0);
        assert!(c.now() >= t0());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(t0());
        assert_eq!(c.now(), t0());
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), t0() + ChronoDuration::seconds(90));
        c.set(t0());
        assert_eq!(c.now(), t0());
    }

    #[test]
    fn local_time_round_trips() {
        // 12:00 UTC at UTC-05:00 is 07:00 local.
        let l = local_time(t0(), -300);
        assert_eq!(l.hour(), 7);
        assert_eq!(from_local(l, -300), t0());
        assert_eq!(
            local_time(t0(), 100_000).hour(),
            12,
            "absurd offsets act as UTC"
        );
    }
}
