//! Simulated time. The lab runs faster than real time (`speed` simulated seconds per real
//! second) so that a download that takes ten minutes on a real iPhone takes seconds in a test.
//!
//! The update state machine ([`super::os_update`]) never reads a clock itself: every call takes
//! `now` as an argument. [`Clock`] is how the caller gets that `now`: [`VirtualClock`] in the
//! running lab, [`ManualClock`] in tests, so that tests set explicit times and never sleep.
//!
//! A fleet can make the lab's clock jump (`clock.jumps`, issue 6): a device whose clock is set
//! forward or back (by a user, NTP, a dead RTC battery) while a trial runs. [`VirtualClock`]
//! applies every jump whose `after` has passed, so everything that reads `lab.clock` (the
//! OS-update state machine, the 1–3 AM install window, the MDM agents, lockdownd's
//! `TimeIntervalSince1970`) sees the same jumped time. Real-time scheduling (poll intervals,
//! attach/detach timers) does not jump: it is the host's time, not the device's.

use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, NaiveDateTime, Utc};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A source of simulated "now".
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
}

/// A step of the simulated clock: once `after` of simulated time has run (as the clock would
/// read without jumps), the clock reads `by` later (`by` negative: earlier) from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockJump {
    pub after: Duration,
    pub by: ChronoDuration,
}

/// Simulated time = `start` + real time elapsed since `origin` × `speed`, plus every
/// [`ClockJump`] whose `after` has passed.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    start: DateTime<Utc>,
    origin: Instant,
    speed: f64,
    jumps: Vec<ClockJump>,
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
            jumps: Vec::new(),
        }
    }

    /// The same clock with these jumps (any order: the offsets of passed jumps add up).
    pub fn with_jumps(mut self, jumps: Vec<ClockJump>) -> Self {
        self.jumps = jumps;
        self
    }

    pub fn jumps(&self) -> &[ClockJump] {
        &self.jumps
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// Simulated time at the real instant `real` (instants before the origin map to `start`),
    /// jumps included. A backward jump can make this earlier than an earlier reading: callers
    /// must not assume time only moves forward.
    pub fn at(&self, real: Instant) -> DateTime<Utc> {
        let elapsed = real
            .saturating_duration_since(self.origin)
            .mul_f64(self.speed);
        let offset = self.jumps.iter().filter(|j| j.after <= elapsed).fold(
            ChronoDuration::zero(),
            |acc, j| {
                acc.checked_add(&j.by)
                    .unwrap_or(if j.by < ChronoDuration::zero() {
                        ChronoDuration::MIN
                    } else {
                        ChronoDuration::MAX
                    })
            },
        );
        shift(after(self.start, elapsed), offset)
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

/// `t + d` for a signed `d`, saturating at either end of representable time.
pub fn shift(t: DateTime<Utc>, d: ChronoDuration) -> DateTime<Utc> {
    t.checked_add_signed(d)
        .unwrap_or(if d < ChronoDuration::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
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

/// The device's offset from UTC in seconds, as [`local_time`] applies it (0 when out of range).
pub fn offset_seconds(offset_minutes: i32) -> i32 {
    FixedOffset::east_opt(offset_minutes.saturating_mul(60))
        .map(|o| o.local_minus_utc())
        .unwrap_or(0)
}

/// The UTC instant of a device-local wall-clock time.
pub fn from_local(local: NaiveDateTime, offset_minutes: i32) -> DateTime<Utc> {
    let secs = offset_seconds(offset_minutes);
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
    fn virtual_clock_applies_every_jump_that_has_passed() {
        let origin = Instant::now();
        let c = VirtualClock::with_origin(t0(), 60.0, origin).with_jumps(vec![
            ClockJump {
                after: Duration::from_secs(40 * 60),
                by: -ChronoDuration::minutes(30),
            },
            ClockJump {
                after: Duration::from_secs(10 * 60),
                by: ChronoDuration::hours(3),
            },
        ]);
        let real = |secs: u64| origin + Duration::from_secs(secs);
        // 9 simulated minutes (9 real seconds at 60×): no jump yet.
        assert_eq!(c.at(real(9)), t0() + ChronoDuration::minutes(9));
        // 10 minutes: +3 h.
        assert_eq!(
            c.at(real(10)),
            t0() + ChronoDuration::minutes(10) + ChronoDuration::hours(3)
        );
        // 40 minutes: +3 h − 30 min; the reading went back from the one just before.
        let before = c.at(real(39));
        let after_back = c.at(real(40));
        assert_eq!(
            after_back,
            t0() + ChronoDuration::minutes(40) + ChronoDuration::minutes(150)
        );
        assert!(after_back < before, "a backward jump moves the clock back");
        assert_eq!(c.jumps().len(), 2);
        // Jumps past the end of time saturate instead of panicking.
        let far = VirtualClock::with_origin(t0(), 1.0, origin).with_jumps(vec![ClockJump {
            after: Duration::ZERO,
            by: ChronoDuration::MIN,
        }]);
        assert_eq!(far.at(origin), DateTime::<Utc>::MIN_UTC);
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
