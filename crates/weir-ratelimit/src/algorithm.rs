//! The three algorithms as pure functions of (limit, state, now). The local
//! store runs them directly; the Redis store runs the same arithmetic in
//! Lua ([`crate::redis`]), so a limit means the same thing in both.
//!
//! Times are integer microseconds. A decision never mutates state itself:
//! it returns the state to write if the request is admitted, so a request
//! checked against several rules consumes from all of them or from none.

use std::time::Duration;

/// How requests are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Generic cell rate algorithm: a token bucket of `burst` tokens refilled
    /// at `requests / period`, kept as one timestamp. Exact, O(1) state.
    Gcra,
    /// Fixed window weighted by the previous window's count. Exact when the
    /// previous window's requests were spread evenly; its error bound: a
    /// trailing period never admits more than `2 × requests` (previous
    /// window's requests all at its very end); under a steady flood it
    /// admits between `requests - 1` and `requests` per period.
    SlidingWindow,
    /// Counter per calendar window of `period`. Cheapest, but a client can
    /// send `requests` at the end of one window and `requests` again at the
    /// start of the next: up to `2 × requests` within one period.
    FixedWindow,
}

/// A limit: `requests` per `period`, bursts of up to `burst` (GCRA only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Requests admitted per period.
    pub requests: u64,
    /// The period.
    pub period: Duration,
    /// GCRA bucket size: requests that may arrive at once. At least 1.
    pub burst: u64,
}

impl Limit {
    pub(crate) fn period_us(&self) -> u64 {
        u64::try_from(self.period.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// GCRA: microseconds per request.
    pub(crate) fn interval_us(&self) -> u64 {
        (self.period_us() / self.requests.max(1)).max(1)
    }

    /// The same limit divided among `n` replicas (at least one request and
    /// a burst of one each): what each replica enforces on its own while
    /// the shared store is unreachable.
    pub fn share(&self, n: u32) -> Limit {
        let n = u64::from(n.max(1));
        Limit {
            requests: (self.requests / n).max(1),
            burst: (self.burst / n).max(1),
            ..*self
        }
    }
}

/// The answer for one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether this rule admits the request.
    pub allowed: bool,
    /// Requests still admissible right now after this one.
    pub remaining: u64,
    /// Until the rule is back at its full quota.
    pub reset: Duration,
    /// When rejected: until a retry can succeed.
    pub retry_after: Duration,
}

impl Outcome {
    /// Admitted with the whole quota left: the answer for a rule that was
    /// not consulted (store down with `Allow`, or another rule refused).
    pub fn full(limit: &Limit) -> Outcome {
        Outcome {
            allowed: true,
            remaining: limit.requests,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }
}

/// What a store keeps per bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// GCRA: theoretical arrival time of the next request.
    Gcra {
        /// Microseconds.
        tat: u64,
    },
    /// Fixed or sliding window counters.
    Window {
        /// Index of the current window (`now / period`).
        window: u64,
        /// Count of the window before (sliding only).
        previous: u64,
        /// Count of the current window.
        current: u64,
    },
}

impl State {
    /// When this state means nothing any more (equivalent to no state): the
    /// local store may drop it after this.
    pub fn expires_us(&self, limit: &Limit) -> u64 {
        match *self {
            State::Gcra { tat } => tat,
            State::Window { window, .. } => {
                let windows = match limit.algorithm {
                    Algorithm::SlidingWindow => 2,
                    _ => 1,
                };
                (window + windows).saturating_mul(limit.period_us())
            }
        }
    }
}

fn us(v: u64) -> Duration {
    Duration::from_micros(v)
}

/// Decides one request against `limit` with the bucket's current `state`
/// at `now` (µs). Returns the outcome and, when admitted, the new state.
pub fn decide(limit: &Limit, state: Option<State>, now: u64) -> (Outcome, Option<State>) {
    match limit.algorithm {
        Algorithm::Gcra => gcra(limit, state, now),
        Algorithm::FixedWindow => fixed(limit, state, now),
        Algorithm::SlidingWindow => sliding(limit, state, now),
    }
}

fn gcra(limit: &Limit, state: Option<State>, now: u64) -> (Outcome, Option<State>) {
    let interval = limit.interval_us();
    let span = limit.burst.max(1).saturating_mul(interval);
    let tat = match state {
        Some(State::Gcra { tat }) => tat.max(now),
        _ => now,
    };
    let next = tat.saturating_add(interval);
    if next - now > span {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset: us(tat - now),
            retry_after: us(next - now - span),
        };
        return (outcome, None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: (span - (next - now)) / interval,
        reset: us(next - now),
        retry_after: Duration::ZERO,
    };
    (outcome, Some(State::Gcra { tat: next }))
}

fn fixed(limit: &Limit, state: Option<State>, now: u64) -> (Outcome, Option<State>) {
    let period = limit.period_us();
    let window = now / period;
    let count = match state {
        Some(State::Window {
            window: w, current, ..
        }) if w == window => current,
        _ => 0,
    };
    let reset = us((window + 1) * period - now);
    if count + 1 > limit.requests {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset,
            retry_after: reset,
        };
        return (outcome, None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: limit.requests - count - 1,
        reset,
        retry_after: Duration::ZERO,
    };
    let state = State::Window {
        window,
        previous: 0,
        current: count + 1,
    };
    (outcome, Some(state))
}

fn sliding(limit: &Limit, state: Option<State>, now: u64) -> (Outcome, Option<State>) {
    let period = limit.period_us();
    let window = now / period;
    let (previous, current) = match state {
        Some(State::Window {
            window: w,
            previous,
            current,
        }) => {
            if w == window {
                (previous, current)
            } else if w + 1 == window {
                (current, 0)
            } else {
                (0, 0)
            }
        }
        _ => (0, 0),
    };
    let elapsed = now - window * period;
    // The previous window's count, weighted by how much of it the trailing
    // period still covers.
    let weighted = previous as f64 * (period - elapsed) as f64 / period as f64;
    let estimate = weighted + current as f64;
    let requests = limit.requests as f64;
    let reset = us(2 * period - elapsed);
    if estimate + 1.0 > requests {
        let retry = if current + 1 > limit.requests || previous == 0 {
            // Not before the next window, and then only once the weight of
            // this window's count has fallen far enough.
            let wait_in_next = if current == 0 {
                0.0
            } else {
                (period as f64 * (1.0 - (requests - 1.0) / current as f64)).max(0.0)
            };
            (period - elapsed) as f64 + wait_in_next
        } else {
            let needed =
                period as f64 - period as f64 * (requests - 1.0 - current as f64) / previous as f64;
            (needed - elapsed as f64).max(1.0)
        };
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset,
            retry_after: us(retry.ceil() as u64),
        };
        return (outcome, None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: (requests - estimate - 1.0).floor() as u64,
        reset,
        retry_after: Duration::ZERO,
    };
    let state = State::Window {
        window,
        previous,
        current: current + 1,
    };
    (outcome, Some(state))
}

/// Per-second limits for the tests of the algorithms and of the stores
/// built on them.
#[cfg(test)]
pub(crate) mod test_limits {
    use super::*;

    pub(crate) fn limit(algorithm: Algorithm, requests: u64, burst: u64) -> Limit {
        Limit {
            algorithm,
            requests,
            period: Duration::from_secs(1),
            burst,
        }
    }

    pub(crate) fn gcra(requests: u64, burst: u64) -> Limit {
        limit(Algorithm::Gcra, requests, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::test_limits::limit;
    use super::*;

    const SECOND: u64 = 1_000_000;

    /// Sends one request every `step` µs from `start` for `duration` µs.
    fn run(limit: &Limit, start: u64, step: u64, duration: u64) -> u64 {
        let mut state = None;
        let mut admitted = 0;
        let mut now = start;
        while now < start + duration {
            let (o, s) = decide(limit, state, now);
            if o.allowed {
                admitted += 1;
                state = s;
            }
            now += step;
        }
        admitted
    }

    #[test]
    fn gcra_admits_burst_then_rate() {
        let l = limit(Algorithm::Gcra, 10, 5);
        // A burst at one instant: exactly `burst`.
        let mut state = None;
        let mut admitted = 0;
        for _ in 0..20 {
            let (o, s) = decide(&l, state, 1000 * SECOND);
            if o.allowed {
                admitted += 1;
                state = s;
            } else {
                assert_eq!(o.retry_after, Duration::from_millis(100));
            }
        }
        assert_eq!(admitted, 5);
        // Flooding for 10 s: burst + rate × time, exactly (the run is
        // half-open, so the admission due at exactly 10 s is not in it).
        assert_eq!(run(&l, 1000 * SECOND, 1000, 10 * SECOND), 5 + 100 - 1);
    }

    #[test]
    fn gcra_remaining_and_reset() {
        let l = limit(Algorithm::Gcra, 10, 10);
        let (o, s) = decide(&l, None, 50 * SECOND);
        assert!(o.allowed);
        assert_eq!(o.remaining, 9);
        assert_eq!(o.reset, Duration::from_millis(100));
        let (o, _) = decide(&l, s, 50 * SECOND);
        assert_eq!(o.remaining, 8);
        assert_eq!(o.reset, Duration::from_millis(200));
    }

    #[test]
    fn fixed_window_allows_double_at_the_boundary() {
        let l = limit(Algorithm::FixedWindow, 10, 0);
        // 10 in the last ms of one window, 10 in the first ms of the next.
        let mut state = None;
        let mut admitted = 0;
        for now in [
            7 * SECOND - 1000,
            7 * SECOND - 999,
            7 * SECOND,
            7 * SECOND + 1,
        ] {
            for _ in 0..10 {
                let (o, s) = decide(&l, state, now);
                if o.allowed {
                    admitted += 1;
                    state = s;
                }
            }
        }
        assert_eq!(admitted, 20, "the documented boundary burst");
        assert_eq!(run(&l, 100 * SECOND, 1000, 10 * SECOND), 100);
    }

    #[test]
    fn sliding_window_smooths_the_boundary() {
        let l = limit(Algorithm::SlidingWindow, 10, 0);
        let mut state = None;
        let mut admitted = 0;
        for now in [7 * SECOND - 1000, 7 * SECOND + 1] {
            for _ in 0..10 {
                let (o, s) = decide(&l, state, now);
                if o.allowed {
                    admitted += 1;
                    state = s;
                } else {
                    assert!(o.retry_after > Duration::ZERO);
                }
            }
        }
        assert_eq!(admitted, 10, "the previous window still counts in full");
        // Steady flooding: never above the rate, and at most about one
        // request per window below it (the weighted estimate must leave
        // room for a whole request).
        let n = run(&l, 100 * SECOND, 1000, 10 * SECOND);
        assert!((88..=100).contains(&n), "{n}");
    }

    #[test]
    fn a_rejected_retry_after_is_when_a_retry_succeeds() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let l = limit(algorithm, 5, 5);
            let mut state = None;
            let now = 33 * SECOND + 123_456;
            let rejected = loop {
                let (o, s) = decide(&l, state, now);
                if !o.allowed {
                    break o;
                }
                state = s;
            };
            let later = now + u64::try_from(rejected.retry_after.as_micros()).unwrap_or(0);
            assert!(decide(&l, state, later).0.allowed, "{algorithm:?}");
        }
    }

    #[test]
    fn shares_never_reach_zero() {
        let l = limit(Algorithm::Gcra, 10, 4);
        assert_eq!(l.share(3).requests, 3);
        assert_eq!(l.share(8).burst, 1);
        assert_eq!(l.share(100).requests, 1);
    }
}
