//! Serving safeguards ([semantics §9](crate::docs::semantics)): a last-known-good cache and a circuit
//! breaker, so a service keeps answering — and says so — when the online
//! backend is down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::online::{OnlineKey, OnlineRow};

/// A bounded map of the last row read per (view, entity key).
///
/// Reads race: a read that started earlier can finish later with an older
/// answer. Each read takes a [`LastKnownGood::ticket`] before it starts, and an
/// answer replaces a cached one only if it is at least as new: a stored row
/// never gives way to an older version of itself, and otherwise (absent rows)
/// the read that started later wins.
#[derive(Debug)]
pub(crate) struct LastKnownGood {
    capacity: usize,
    tickets: AtomicU64,
    rows: Mutex<HashMap<OnlineKey, (u64, Option<OnlineRow>)>>,
}

impl LastKnownGood {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tickets: AtomicU64::new(0),
            rows: Mutex::new(HashMap::new()),
        }
    }

    /// The ticket of a read about to start (increasing).
    pub(crate) fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Remembers a successful read that took `ticket` before it started
    /// (absent rows too: "known not found").
    pub(crate) fn remember(&self, ticket: u64, keys: &[OnlineKey], rows: &[Option<OnlineRow>]) {
        let Ok(mut m) = self.rows.lock() else { return };
        for (k, r) in keys.iter().zip(rows) {
            match m.get_mut(k) {
                Some(old) => {
                    let newer = match (&old.1, r) {
                        (Some(o), Some(n)) => {
                            n.version() > o.version()
                                || (n.version() == o.version() && ticket > old.0)
                        }
                        _ => ticket > old.0,
                    };
                    if newer {
                        *old = (ticket, r.clone());
                    }
                }
                None => {
                    if m.len() >= self.capacity {
                        // Evict an arbitrary entry: O(1), good enough for a fallback cache.
                        if let Some(victim) = m.keys().next().cloned() {
                            m.remove(&victim);
                        }
                    }
                    m.insert(k.clone(), (ticket, r.clone()));
                }
            }
        }
    }

    /// Cached answers: `None` = never read, `Some(None)` = known absent.
    pub(crate) fn lookup(&self, keys: &[OnlineKey]) -> Vec<Option<Option<OnlineRow>>> {
        match self.rows.lock() {
            Ok(m) => keys
                .iter()
                .map(|k| m.get(k).map(|(_, r)| r.clone()))
                .collect(),
            Err(_) => vec![None; keys.len()],
        }
    }
}

/// Opens after `threshold` consecutive failures; while open, reads fail fast
/// (or fall back to the cache) until `cooldown` has passed, then one trial read
/// is let through (half-open).
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    /// Backend id, the label of the breaker gauge.
    backend: &'static str,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl CircuitBreaker {
    pub(crate) fn new(backend: &'static str, threshold: u32, cooldown: Duration) -> Self {
        crate::telemetry::record_breaker_open(backend, false);
        Self {
            backend,
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new((0, None)),
        }
    }

    /// Whether a read may go to the backend now.
    pub(crate) fn allow(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        match s.1 {
            Some(opened) if opened.elapsed() < self.cooldown => false,
            Some(_) => {
                // half-open: let this one through, re-arm the timer for others
                s.1 = Some(Instant::now());
                true
            }
            None => true,
        }
    }

    pub(crate) fn success(&self) {
        if let Ok(mut s) = self.state.lock() {
            if s.1.is_some() {
                crate::telemetry::record_breaker_open(self.backend, false);
            }
            *s = (0, None);
        }
    }

    pub(crate) fn failure(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = s.0.saturating_add(1);
            if s.0 >= self.threshold {
                if s.1.is_none() {
                    crate::telemetry::record_breaker_open(self.backend, true);
                }
                s.1 = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(e: u8) -> OnlineKey {
        OnlineKey {
            view: "v".into(),
            entity_key: vec![e],
        }
    }

    fn row(e: u8, ts: i64) -> OnlineRow {
        OnlineRow {
            entity_key: vec![e],
            event_ts: ts,
            created_ts: None,
            payload: vec![ts as u8].into(),
        }
    }

    #[test]
    fn an_older_answer_never_replaces_a_newer_one() {
        let c = LastKnownGood::new(10);
        let (early, late) = (c.ticket(), c.ticket());
        // the later read finishes first with the newer row ...
        c.remember(late, &[key(1)], &[Some(row(1, 20))]);
        // ... then the earlier read lands with the older one
        c.remember(early, &[key(1)], &[Some(row(1, 10))]);
        assert_eq!(c.lookup(&[key(1)]), vec![Some(Some(row(1, 20)))]);
        // an earlier read that saw no row does not erase a later one's row
        c.remember(early, &[key(1)], &[None]);
        assert_eq!(c.lookup(&[key(1)]), vec![Some(Some(row(1, 20)))]);
        // a newer version replaces it whatever the ticket
        c.remember(early, &[key(1)], &[Some(row(1, 30))]);
        assert_eq!(c.lookup(&[key(1)]), vec![Some(Some(row(1, 30)))]);
        // a read started after the others that finds nothing (view deleted) wins
        let latest = c.ticket();
        c.remember(latest, &[key(1)], &[None]);
        assert_eq!(c.lookup(&[key(1)]), vec![Some(None)]);
    }
}
