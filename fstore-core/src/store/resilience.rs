//! Serving safeguards ([semantics §9](crate::docs::semantics)): a last-known-good cache and a circuit
//! breaker, so a service keeps answering — and says so — when the online
//! backend is down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::online::{OnlineKey, OnlineRow};

/// A bounded map of the last row read per (view, entity key).
#[derive(Debug)]
pub(crate) struct LastKnownGood {
    capacity: usize,
    rows: Mutex<HashMap<OnlineKey, Option<OnlineRow>>>,
}

impl LastKnownGood {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            rows: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers a successful read (absent rows too: "known not found").
    pub(crate) fn remember(&self, keys: &[OnlineKey], rows: &[Option<OnlineRow>]) {
        let Ok(mut m) = self.rows.lock() else { return };
        for (k, r) in keys.iter().zip(rows) {
            if m.len() >= self.capacity && !m.contains_key(k) {
                // Evict an arbitrary entry: O(1), good enough for a fallback cache.
                if let Some(victim) = m.keys().next().cloned() {
                    m.remove(&victim);
                }
            }
            m.insert(k.clone(), r.clone());
        }
    }

    /// Cached answers: `None` = never read, `Some(None)` = known absent.
    pub(crate) fn lookup(&self, keys: &[OnlineKey]) -> Vec<Option<Option<OnlineRow>>> {
        match self.rows.lock() {
            Ok(m) => keys.iter().map(|k| m.get(k).cloned()).collect(),
            Err(_) => vec![None; keys.len()],
        }
    }
}

/// Opens after `threshold` consecutive failures; while open, reads fail fast
/// (or fall back to the cache) until `cooldown` has passed, then one trial read
/// is let through (half-open).
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl CircuitBreaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
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
            *s = (0, None);
        }
    }

    pub(crate) fn failure(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = s.0.saturating_add(1);
            if s.0 >= self.threshold {
                s.1 = Some(Instant::now());
            }
        }
    }
}
