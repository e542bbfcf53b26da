//! A circuit breaker for the shared store: after consecutive failures,
//! requests stop waiting for Redis timeouts and go straight to their
//! `onStoreFailure` choice; after a pause one request probes Redis, and
//! success closes the breaker again. The pause doubles while probes fail,
//! up to a ceiling, so a dead Redis costs one probe per few seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
const THRESHOLD: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        pause: Duration,
    },
    /// One probe is in flight; everyone else treats the store as down.
    Probing {
        pause: Duration,
    },
}

/// The breaker. Cheap to consult: one uncontended mutex.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    open: prometheus::IntGauge,
}

/// Whether to call the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Permit {
    /// Call it.
    Call,
    /// Call it as the probe that decides whether the breaker closes.
    Probe,
    /// Do not: apply the failure mode.
    Refuse,
}

impl Breaker {
    /// A closed breaker; `open` is set to 1 while it is open.
    pub fn new(open: prometheus::IntGauge) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            open,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every transition is one assignment: a poisoned state is valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks whether a request may use the store now.
    pub fn permit(&self) -> Permit {
        self.permit_at(Instant::now())
    }

    fn permit_at(&self, now: Instant) -> Permit {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Permit::Call,
            State::Open { until, pause } if now >= until => {
                *state = State::Probing { pause };
                Permit::Probe
            }
            State::Open { .. } | State::Probing { .. } => Permit::Refuse,
        }
    }

    /// Records a successful call.
    pub fn success(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { failures: 0 }) {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!("Rate-limit store reachable again; global limits are shared again.");
            }
            *state = State::Closed { failures: 0 };
            self.open.set(0);
        }
    }

    /// Records a failed call.
    pub fn failure(&self) {
        self.failure_at(Instant::now());
    }

    fn failure_at(&self, now: Instant) {
        let mut state = self.lock();
        let next = match *state {
            State::Closed { failures } if failures + 1 < THRESHOLD => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } => {
                tracing::warn!(
                    pause_ms = FIRST_PAUSE.as_millis() as u64,
                    "Rate-limit store failing; applying each rule's onStoreFailure until it answers again."
                );
                State::Open {
                    until: now + FIRST_PAUSE,
                    pause: FIRST_PAUSE,
                }
            }
            State::Probing { pause } | State::Open { pause, .. } => {
                let pause = (pause * 2).min(MAX_PAUSE);
                State::Open {
                    until: now + pause,
                    pause,
                }
            }
        };
        if matches!(next, State::Open { .. }) {
            self.open.set(1);
        }
        *state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_pause() {
        let gauge = prometheus::IntGauge::new("b", "b").expect("gauge");
        let b = Breaker::new(gauge.clone());
        let t0 = Instant::now();
        for _ in 0..THRESHOLD {
            assert_eq!(b.permit_at(t0), Permit::Call);
            b.failure_at(t0);
        }
        assert_eq!(gauge.get(), 1);
        assert_eq!(b.permit_at(t0 + FIRST_PAUSE / 2), Permit::Refuse);
        assert_eq!(b.permit_at(t0 + FIRST_PAUSE), Permit::Probe);
        assert_eq!(
            b.permit_at(t0 + FIRST_PAUSE),
            Permit::Refuse,
            "one probe at a time"
        );
        // A failed probe doubles the pause.
        let t1 = t0 + FIRST_PAUSE;
        b.failure_at(t1);
        assert_eq!(b.permit_at(t1 + FIRST_PAUSE), Permit::Refuse);
        assert_eq!(b.permit_at(t1 + FIRST_PAUSE * 2), Permit::Probe);
        b.success();
        assert_eq!(gauge.get(), 0);
        assert_eq!(b.permit(), Permit::Call);
    }
}
