//! Write timestamps and TTLs: pure arithmetic, no I/O.
//!
//! # Why not a pure function of the version
//!
//! Cassandra and ScyllaDB keep, per cell, the value with the greatest *write
//! timestamp* (a signed 64-bit integer; ties are broken by tombstone, then
//! expiry, then cell value — never by arrival). A version `(event_ts,
//! created_ts)` is two microsecond instants, 128 bits: no 64-bit function of it
//! is strictly monotone over realistic data (the conformance suite itself
//! writes versions of the same event whose created times differ by 1 µs), and
//! ScyllaDB refuses timestamps more than three days in the future by default.
//! A pure function would also give equal versions equal timestamps, so the
//! contract's "equal version: the later write wins" would be decided by the
//! payload bytes instead.
//!
//! # What we do instead
//!
//! Every write first reads the partition's stored version and the write
//! timestamp it was stored with (kept in the `write_ts` column, written in the
//! same statement, so it is exactly the cells' timestamp). Then
//! [`plan_write`]:
//!
//! * stored version strictly newer → the row is **skipped** (and counted);
//! * otherwise it is written `USING TIMESTAMP max(event_ts, stored_ts + 1)`.
//!
//! So along any serial history of one partition the accepted writes carry
//! strictly increasing timestamps: newest version wins, equal versions go to the
//! later write, and `skipped` is exact. The timestamp is still the event time
//! (µs since epoch, Cassandra's usual unit) whenever the event is newer than
//! what is stored, so **concurrent** writers racing on one partition are
//! resolved by the cluster in event-time order; only racers whose versions
//! share the same `event_ts` microsecond end with either one (identically on
//! every replica).

use std::fmt;
use std::time::Duration;

/// Microseconds per second.
const US: i64 = 1_000_000;

/// What is stored for a partition, as read before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// `(event_ts, created_ts or i64::MIN)`; `None` for a deletion marker.
    pub(crate) version: Option<(i64, i64)>,
    /// The write timestamp of the stored cells.
    pub(crate) write_ts: i64,
}

/// The decision for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A strictly newer version is stored.
    Skip,
    /// Write with this timestamp.
    Write(i64),
}

/// Why a row has no write timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampError {
    /// `event_ts == i64::MIN`, the timestamp CQL reserves for "none".
    Reserved,
    /// The stored timestamp is `i64::MAX`: nothing can be written after it.
    Exhausted,
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserved => write!(
                f,
                "event time {} µs is the reserved CQL timestamp",
                i64::MIN
            ),
            Self::Exhausted => write!(
                f,
                "the stored row has the largest write timestamp; nothing can replace it"
            ),
        }
    }
}

impl std::error::Error for TimestampError {}

/// Decides whether and with which write timestamp a row of `version`
/// (`(event_ts, created_ts or i64::MIN)`, see `OnlineRow::version`) is written
/// over `stored`. See the module docs.
pub(crate) fn plan_write(
    version: (i64, i64),
    stored: Option<Stored>,
) -> Result<Plan, TimestampError> {
    let event_ts = version.0;
    if event_ts == i64::MIN {
        return Err(TimestampError::Reserved);
    }
    match stored {
        None => Ok(Plan::Write(event_ts)),
        Some(s) => {
            if s.version.is_some_and(|v| v > version) {
                return Ok(Plan::Skip);
            }
            let next = s.write_ts.checked_add(1).ok_or(TimestampError::Exhausted)?;
            Ok(Plan::Write(event_ts.max(next)))
        }
    }
}

/// The timestamp of a deletion marker over `stored_ts`.
pub(crate) fn delete_timestamp(stored_ts: i64) -> Result<i64, TimestampError> {
    stored_ts.checked_add(1).ok_or(TimestampError::Exhausted)
}

/// Largest TTL Cassandra and ScyllaDB accept (20 years), seconds.
pub(crate) const MAX_TTL_SECS: i64 = 630_720_000;

/// The `USING TTL` of a row, in seconds, or `None` when the row is already
/// expired at `now` and must not be written.
///
/// * `view_ttl = None` → `Some(0)`: CQL's "no expiry".
/// * Core calls a row expired when `event_ts < now - ttl` ([semantics §6](fstore_core::docs::semantics)), i.e. a
///   row is still served at exactly `now == event_ts + ttl`. So the row is
///   skipped only when `event_ts + ttl < now`.
/// * Otherwise the TTL is `ceil((event_ts + ttl - now) / 1 s) + grace`, with
///   `grace >= 1 s` absorbing the server's whole-second expiry clock and clock
///   skew: the cluster never drops a row before core would call it expired.
///   It is always `>= 1`.
/// * A TTL above the CQL maximum (20 years) is written as `0` (no expiry)
///   rather than capped: capping would expire the row too early. Reads still
///   enforce the view's TTL.
pub(crate) fn ttl_seconds(
    event_ts: i64,
    view_ttl: Option<Duration>,
    now: i64,
    grace: Duration,
) -> Option<i32> {
    let Some(ttl) = view_ttl else { return Some(0) };
    let ttl_us = i128::try_from(ttl.as_micros()).unwrap_or(i128::MAX);
    let expires_at = i128::from(event_ts).saturating_add(ttl_us);
    let remaining = expires_at - i128::from(now);
    if remaining < 0 {
        return None;
    }
    let grace_s = i128::from(grace.as_secs().max(1)) + i128::from(grace.subsec_nanos() > 0);
    let secs = (remaining + i128::from(US) - 1) / i128::from(US) + grace_s;
    if secs > i128::from(MAX_TTL_SECS) {
        return Some(0);
    }
    // secs in [1, MAX_TTL_SECS] fits i32.
    Some(i32::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The cluster: the cell with the greatest timestamp survives; on a tie
    /// we pick the *wrong* one (the earlier write) to prove ties never decide.
    #[derive(Default)]
    struct Cluster(Option<((i64, i64), u32, i64)>); // (version, write id, ts)

    impl Cluster {
        fn apply(&mut self, v: (i64, i64), id: u32) -> Result<Plan, TimestampError> {
            let stored = self.0.map(|(sv, _, ts)| Stored {
                version: Some(sv),
                write_ts: ts,
            });
            let p = plan_write(v, stored)?;
            if let Plan::Write(ts) = p {
                match self.0 {
                    Some((_, _, old)) if old >= ts => {}
                    _ => self.0 = Some((v, id, ts)),
                }
            }
            Ok(p)
        }
    }

    fn version_strategy() -> impl Strategy<Value = (i64, i64)> {
        prop_oneof![
            (0i64..6, prop_oneof![Just(i64::MIN), 0i64..4]),
            (
                any::<i64>().prop_filter("reserved", |e| *e != i64::MIN),
                any::<i64>()
            ),
            (
                (1i64 << 50)..(1i64 << 51),
                prop_oneof![Just(i64::MIN), (1i64 << 50)..(1i64 << 51)]
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// Any serial sequence of writes ends with the newest version, the later
        /// of equal ones, and `skipped` counts exactly the strictly older rows.
        #[test]
        fn serial_history_keeps_newest_and_later_of_equals(
            vs in proptest::collection::vec(version_strategy(), 1..40)
        ) {
            let mut c = Cluster::default();
            let mut skipped = 0;
            let mut expect: Option<((i64, i64), u32)> = None;
            for (i, v) in vs.iter().enumerate() {
                let i = i as u32;
                let newer = expect.is_none_or(|(ev, _)| *v >= ev);
                match c.apply(*v, i) {
                    Ok(Plan::Skip) => { prop_assert!(!newer); skipped += 1; }
                    Ok(Plan::Write(_)) => { prop_assert!(newer); expect = Some((*v, i)); }
                    Err(TimestampError::Exhausted) => return Ok(()), // only after i64::MAX
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            let (v, id, _) = c.0.unwrap();
            prop_assert_eq!(Some((v, id)), expect);
            let older = vs.iter().scan(None::<(i64, i64)>, |m, v| {
                let o = m.is_some_and(|m| *v < m);
                if !o { *m = Some(*v); }
                Some(o)
            }).filter(|o| *o).count();
            prop_assert_eq!(skipped, older);
        }

        /// A newer event never gets a smaller timestamp than an older one over
        /// the same stored row: racing writers are ordered by event time.
        #[test]
        fn timestamp_monotone_in_event(a in version_strategy(), b in version_strategy(), st in any::<i64>()) {
            let stored = Some(Stored { version: None, write_ts: st });
            if let (Ok(Plan::Write(ta)), Ok(Plan::Write(tb))) = (plan_write(a, stored), plan_write(b, stored)) {
                if a.0 < b.0 { prop_assert!(ta <= tb); }
                prop_assert!(ta > st && tb > st);
            }
        }
        #[test]
        fn ttl_never_zero_or_negative_when_written(
            e in -(1i64 << 52)..(1i64 << 52),
            ttl_s in 0u64..(40 * 365 * 86_400),
            ttl_sub in 0u32..1_000_000_000,
            now in -(1i64 << 52)..(1i64 << 52),
            grace in 0u64..120,
        ) {
            let ttl = Duration::new(ttl_s, ttl_sub);
            let got = ttl_seconds(e, Some(ttl), now, Duration::from_secs(grace));
            let expires = i128::from(e) + ttl.as_micros() as i128;
            match got {
                None => prop_assert!(expires < i128::from(now), "skipped a live row"),
                Some(0) => prop_assert!(expires - i128::from(now) > i128::from(MAX_TTL_SECS) * 1_000_000 - 121_000_000),
                Some(s) => {
                    prop_assert!(s >= 1);
                    prop_assert!(i64::from(s) <= MAX_TTL_SECS);
                    // the cluster keeps it at least until core calls it expired, + 1 s
                    prop_assert!(i128::from(now) + i128::from(s) * 1_000_000 >= expires + 1_000_000);
                }
            }
        }
    }

    #[test]
    fn plan_table() {
        let st = |v: Option<(i64, i64)>, ts| {
            Some(Stored {
                version: v,
                write_ts: ts,
            })
        };
        assert_eq!(plan_write((5, 1), None), Ok(Plan::Write(5)));
        // newer event: its own time when above the stored timestamp
        assert_eq!(plan_write((9, 1), st(Some((5, 1)), 5)), Ok(Plan::Write(9)));
        // equal version and same event, newer created: stored + 1
        assert_eq!(plan_write((5, 1), st(Some((5, 1)), 5)), Ok(Plan::Write(6)));
        assert_eq!(plan_write((5, 2), st(Some((5, 1)), 6)), Ok(Plan::Write(7)));
        // older: skipped (older event, or same event with older created)
        assert_eq!(plan_write((4, 9), st(Some((5, 1)), 5)), Ok(Plan::Skip));
        assert_eq!(plan_write((5, 0), st(Some((5, 1)), 5)), Ok(Plan::Skip));
        assert_eq!(
            plan_write((5, i64::MIN), st(Some((5, 1)), 5)),
            Ok(Plan::Skip)
        );
        // after a deletion marker: anything is written above the marker
        assert_eq!(plan_write((1, 1), st(None, 100)), Ok(Plan::Write(101)));
        assert_eq!(
            plan_write((i64::MIN, 0), None),
            Err(TimestampError::Reserved)
        );
        assert_eq!(
            plan_write((1, 1), st(None, i64::MAX)),
            Err(TimestampError::Exhausted)
        );
        assert_eq!(delete_timestamp(7), Ok(8));
        assert_eq!(delete_timestamp(i64::MAX), Err(TimestampError::Exhausted));
    }

    #[test]
    fn ttl_table() {
        let g = Duration::from_secs(1);
        let h = Some(Duration::from_secs(3600));
        assert_eq!(ttl_seconds(0, None, 10 * US, g), Some(0));
        // expires exactly now: core still serves it -> written, ttl >= 1
        assert_eq!(ttl_seconds(0, h, 3600 * US, g), Some(1));
        // one µs past: skipped
        assert_eq!(ttl_seconds(0, h, 3600 * US + 1, g), None);
        // fresh row: full ttl + grace
        assert_eq!(ttl_seconds(0, h, 0, g), Some(3601));
        // partial second rounds up
        assert_eq!(ttl_seconds(0, h, 1, g), Some(3601));
        assert_eq!(ttl_seconds(0, h, US, g), Some(3600));
        // grace zero still gives >= 1
        assert_eq!(ttl_seconds(0, h, 3600 * US, Duration::ZERO), Some(1));
        // grace with a fraction rounds up
        assert_eq!(
            ttl_seconds(0, h, 0, Duration::from_millis(1500)),
            Some(3602)
        );
        // beyond 20 years: no expiry rather than too-early expiry
        assert_eq!(
            ttl_seconds(0, Some(Duration::from_secs(30 * 365 * 86_400)), 0, g),
            Some(0)
        );
        assert_eq!(ttl_seconds(0, Some(Duration::MAX), 0, g), Some(0));
        // ttl zero: expired the moment after the event
        assert_eq!(ttl_seconds(5, Some(Duration::ZERO), 5, g), Some(1));
        assert_eq!(ttl_seconds(5, Some(Duration::ZERO), 6, g), None);
        // extreme inputs do not overflow
        assert_eq!(ttl_seconds(i64::MIN, h, i64::MAX, g), None);
        assert_eq!(
            ttl_seconds(i64::MAX, Some(Duration::MAX), i64::MIN, g),
            Some(0)
        );
    }
}
