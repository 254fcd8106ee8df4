//! Write timestamps and TTLs: pure arithmetic, no I/O.
//!
//! # Why a layout at all
//!
//! Cassandra and ScyllaDB keep, per cell, the value with the greatest *write
//! timestamp* (a signed 64-bit integer). If that timestamp orders exactly like
//! [`OnlineRow::version`](fstore_core::OnlineRow::version) — `(event_ts,
//! created_ts)`, a missing created time first — then blind upserts give
//! "newest wins whatever the arrival order" with no read and no LWT.
//!
//! A version is two microsecond instants: 128 bits. No order-embedding of that
//! into 64 bits exists, and ScyllaDB (default `restrict_future_timestamp`)
//! also refuses timestamps more than three days in the future, which leaves
//! about 63 usable bits. So the domain is restricted, and every row outside it
//! is **rejected** ([`TimestampError`]) rather than given a timestamp that could
//! misorder it:
//!
//! * `event_ts` in `[1970-01-01T00:00:00Z, 2106-02-07T06:28:16Z)`, any
//!   microsecond, when `created_ts` is `None`;
//! * when `created_ts` is present, `event_ts` and `created_ts` must both be
//!   **whole seconds**, with `created_ts - event_ts` in
//!   `[-CREATED_LAG_BEFORE, +CREATED_LAG_AFTER]` seconds (about −388 days to
//!   +67 years).
//!
//! # Layout
//!
//! Time is cut into event seconds `s` (2^32 of them). Each second owns a block
//! of 2^31 consecutive timestamps, laid out in version order:
//!
//! ```text
//! (s.000000, None) | (s, Some(s + lag)) for lag = -LAG_BEFORE ..= LAG_AFTER | (s.000001, None) … (s.999999, None)
//!  offset 0        | offsets 1 ..= SOME_SLOTS                              | offsets SOME_SLOTS + 1 …
//! ```
//!
//! The index `s · 2^31 + offset` is in `[0, 2^63 − 1)`, and the timestamp is
//! `index − (2^63 − 1)`: always in `[i64::MIN + 1, 0]`, never the reserved
//! `i64::MIN`, never in the future. Equal versions give equal timestamps (the
//! function is pure), distinct versions distinct ones (it is strictly
//! monotone); the proptests below check both.

use std::fmt;
use std::time::Duration;

/// Microseconds per second.
const US: i64 = 1_000_000;
/// Event seconds covered: `[0, 2^32)`.
const EVENT_SECONDS: i64 = 1 << 32;
/// Timestamps per event second.
const BLOCK: i64 = 1 << 31;
/// Slots for `Some(created)` in each block (the rest holds the 10^6 `None` microseconds).
const SOME_SLOTS: i64 = BLOCK - US;
/// Largest accepted `event_ts - created_ts` when created precedes the event, seconds (~388 days).
pub(crate) const CREATED_LAG_BEFORE: i64 = 1 << 25;
/// Largest accepted `created_ts - event_ts`, seconds (~67 years).
pub(crate) const CREATED_LAG_AFTER: i64 = SOME_SLOTS - CREATED_LAG_BEFORE - 1;
/// Largest accepted event time, exclusive, microseconds.
pub(crate) const EVENT_END_US: i64 = EVENT_SECONDS * US;
/// Added to the index so that the largest one maps to 0.
const SHIFT: i64 = i64::MAX;

/// Largest TTL Cassandra and ScyllaDB accept (20 years), seconds.
pub(crate) const MAX_TTL_SECS: i64 = 630_720_000;

/// Why a row has no write timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampError {
    /// `event_ts` outside `[1970-01-01, 2106-02-07)`.
    EventOutOfRange(i64),
    /// `created_ts` present but `event_ts` is not a whole second.
    EventNotWholeSecond(i64),
    /// `created_ts` is not a whole second.
    CreatedNotWholeSecond(i64),
    /// `created_ts - event_ts` outside the accepted lag window.
    CreatedLagOutOfRange {
        /// Event time, µs.
        event_ts: i64,
        /// Created time, µs.
        created_ts: i64,
    },
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EventOutOfRange(e) => write!(
                f,
                "event time {e} µs is outside [1970-01-01T00:00:00Z, 2106-02-07T06:28:16Z), \
                 the range the scylla store can order with a 64-bit write timestamp"
            ),
            Self::EventNotWholeSecond(e) => write!(
                f,
                "event time {e} µs has a sub-second part; with a created timestamp the scylla store \
                 orders (event, created) in one 64-bit write timestamp and needs both in whole seconds"
            ),
            Self::CreatedNotWholeSecond(c) => write!(
                f,
                "created time {c} µs has a sub-second part; the scylla store needs whole-second created \
                 timestamps to order them exactly in a 64-bit write timestamp"
            ),
            Self::CreatedLagOutOfRange {
                event_ts,
                created_ts,
            } => write!(
                f,
                "created time {created_ts} µs is more than {CREATED_LAG_BEFORE} s before or \
                 {CREATED_LAG_AFTER} s after event time {event_ts} µs"
            ),
        }
    }
}

impl std::error::Error for TimestampError {}

/// The Cassandra write timestamp of a row version; see the module docs.
///
/// Strictly monotone in `(event_ts, created_ts)` (with `None` before any
/// `Some`) over the accepted domain; rows outside it are an error.
pub(crate) fn write_timestamp(
    event_ts: i64,
    created_ts: Option<i64>,
) -> Result<i64, TimestampError> {
    if !(0..EVENT_END_US).contains(&event_ts) {
        return Err(TimestampError::EventOutOfRange(event_ts));
    }
    let (sec, micros) = (event_ts / US, event_ts % US);
    let offset = match created_ts {
        None if micros == 0 => 0,
        None => SOME_SLOTS + micros,
        Some(c) => {
            if micros != 0 {
                return Err(TimestampError::EventNotWholeSecond(event_ts));
            }
            if c.rem_euclid(US) != 0 {
                return Err(TimestampError::CreatedNotWholeSecond(c));
            }
            let lag = c.div_euclid(US) - sec;
            if !(-CREATED_LAG_BEFORE..=CREATED_LAG_AFTER).contains(&lag) {
                return Err(TimestampError::CreatedLagOutOfRange {
                    event_ts,
                    created_ts: c,
                });
            }
            1 + lag + CREATED_LAG_BEFORE
        }
    };
    // sec < 2^32, offset < 2^31: index < 2^63 - 1 fits; no overflow anywhere.
    Ok(sec * BLOCK + offset - SHIFT)
}

/// The `USING TTL` of a row, in seconds, or `None` when the row is already
/// expired at `now` and must not be written.
///
/// * `view_ttl = None` → `Some(0)`: CQL's "no expiry".
/// * Core calls a row expired when `event_ts < now - ttl` (DESIGN §6), i.e. a
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

    fn version(e: i64, c: Option<i64>) -> (i64, i64) {
        (e, c.unwrap_or(i64::MIN))
    }

    /// Any accepted version: None with any µs, or whole seconds with a lag in range.
    fn accepted() -> impl Strategy<Value = (i64, Option<i64>)> {
        prop_oneof![
            (0..EVENT_END_US).prop_map(|e| (e, None)),
            // dense near the epoch, where tests live
            (0..10 * US).prop_map(|e| (e, None)),
            (0..EVENT_SECONDS, -CREATED_LAG_BEFORE..=CREATED_LAG_AFTER)
                .prop_map(|(s, lag)| (s * US, Some((s + lag) * US))),
            (0..20i64, -3..20i64).prop_map(|(s, lag)| (s * US, Some((s + lag) * US))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn order_equals_version_order((e1, c1) in accepted(), (e2, c2) in accepted()) {
            let t1 = write_timestamp(e1, c1);
            let t2 = write_timestamp(e2, c2);
            // lag window edge: a generated created may fall outside; both must then be errors
            prop_assume!(t1.is_ok() && t2.is_ok());
            let (t1, t2) = (t1.unwrap(), t2.unwrap());
            prop_assert_eq!(t1.cmp(&t2), version(e1, c1).cmp(&version(e2, c2)),
                "({}, {:?}) -> {}, ({}, {:?}) -> {}", e1, c1, t1, e2, c2, t2);
        }

        #[test]
        fn never_reserved_nor_future((e, c) in accepted()) {
            if let Ok(t) = write_timestamp(e, c) {
                prop_assert!(t > i64::MIN && t <= 0);
            }
        }

        #[test]
        fn outside_domain_is_an_error(e in any::<i64>(), c in proptest::option::of(any::<i64>())) {
            let ok = (0..EVENT_END_US).contains(&e)
                && match c {
                    None => true,
                    Some(c) => e % US == 0 && c.rem_euclid(US) == 0
                        && (-CREATED_LAG_BEFORE..=CREATED_LAG_AFTER).contains(&(c.div_euclid(US) - e / US)),
                };
            prop_assert_eq!(write_timestamp(e, c).is_ok(), ok);
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
    fn edges() {
        // the very first and last accepted versions
        assert_eq!(write_timestamp(0, None), Ok(-SHIFT));
        let last = write_timestamp(EVENT_END_US - 1, None).unwrap();
        assert_eq!(last, 0);
        assert_eq!(
            write_timestamp(EVENT_END_US, None),
            Err(TimestampError::EventOutOfRange(EVENT_END_US))
        );
        assert_eq!(
            write_timestamp(-1, None),
            Err(TimestampError::EventOutOfRange(-1))
        );
        // None < Some at the same event, Some < next microsecond
        let none = write_timestamp(5 * US, None).unwrap();
        let lo = write_timestamp(5 * US, Some((5 - CREATED_LAG_BEFORE) * US)).unwrap();
        let hi = write_timestamp(5 * US, Some((5 + CREATED_LAG_AFTER) * US)).unwrap();
        let next = write_timestamp(5 * US + 1, None).unwrap();
        assert!(none < lo && lo < hi && hi < next);
        assert_eq!(hi + 1, next);
        assert_eq!(none + 1, lo);
        // end of a block meets the start of the next
        let end = write_timestamp(6 * US - 1, None).unwrap();
        assert_eq!(end + 1, write_timestamp(6 * US, None).unwrap());
        assert!(write_timestamp(5 * US, Some((6 + CREATED_LAG_AFTER) * US)).is_err());
        assert!(write_timestamp(5 * US, Some((4 - CREATED_LAG_BEFORE) * US)).is_err());
        assert_eq!(
            write_timestamp(5 * US + 1, Some(5 * US)),
            Err(TimestampError::EventNotWholeSecond(5 * US + 1))
        );
        assert_eq!(
            write_timestamp(5 * US, Some(5 * US + 7)),
            Err(TimestampError::CreatedNotWholeSecond(5 * US + 7))
        );
        // negative created (before 1970) is fine if the lag is in range
        assert!(write_timestamp(0, Some(-US)).is_ok());
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
