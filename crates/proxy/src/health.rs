//! Host health, TKO style (proxy.md §3.6), and the latency score used to order reads (§3.5).
//!
//! This module only keeps state and decides transitions; the owner ([`crate::pool::Host`])
//! logs them, counts them and runs the probes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

#[derive(Debug, Clone)]
pub struct HealthParams {
    /// Failures since the last success that mark a host down.
    pub max_errors: usize,
    /// Failures older than this are ignored.
    pub error_window: Duration,
    /// First probe after a connect failure.
    pub dial_silence: Duration,
    /// First probe after a soft down.
    pub probe_interval: Duration,
    pub probe_max: Duration,
    /// The score expires after this long without samples.
    pub score_ttl: Duration,
}

impl Default for HealthParams {
    fn default() -> Self {
        HealthParams {
            max_errors: 10,
            error_window: Duration::from_secs(10),
            dial_silence: Duration::from_millis(5000),
            probe_interval: Duration::from_millis(1000),
            probe_max: Duration::from_millis(30000),
            score_ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    Connect,
    Errors,
}

impl DownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DownReason::Connect => "connect",
            DownReason::Errors => "errors",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    failures: VecDeque<Instant>,
    down_since: Option<(Instant, SystemTime)>,
    next_probe: Option<(Instant, SystemTime)>,
    interval: Duration,
    score: Option<f64>,
    last_sample: Option<Instant>,
}

/// What `/api/hosts` shows.
#[derive(Debug, Clone)]
pub struct HealthView {
    pub up: bool,
    pub score: Option<f64>,
    pub failures: usize,
    pub down_since: Option<SystemTime>,
    pub next_probe: Option<SystemTime>,
}

pub struct Health {
    up: AtomicBool,
    st: Mutex<State>,
    p: HealthParams,
}

fn jitter(d: Duration) -> Duration {
    // ±10% so that many proxies do not probe a recovering node in lockstep.
    let f = 0.9 + 0.2 * fastrand::f64();
    d.mul_f64(f)
}

impl Health {
    pub fn new(p: HealthParams) -> Health {
        Health {
            up: AtomicBool::new(true),
            st: Mutex::new(State::default()),
            p,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A well-formed reply: the host is alive.
    pub fn on_success(&self) {
        let mut st = self.st.lock();
        st.failures.clear();
    }

    /// A failure (§3.6). Returns the reason when this call took the host down.
    pub fn on_failure(&self, connect: bool) -> Option<DownReason> {
        let now = Instant::now();
        let mut st = self.st.lock();
        if !self.is_up() {
            return None;
        }
        let reason = if connect {
            DownReason::Connect
        } else {
            st.failures.push_back(now);
            while let Some(&t) = st.failures.front() {
                if now.duration_since(t) > self.p.error_window {
                    st.failures.pop_front();
                } else {
                    break;
                }
            }
            if st.failures.len() < self.p.max_errors {
                return None;
            }
            DownReason::Errors
        };
        let first = match reason {
            DownReason::Connect => self.p.dial_silence,
            DownReason::Errors => self.p.probe_interval,
        };
        self.up.store(false, Ordering::Relaxed);
        st.down_since = Some((now, SystemTime::now()));
        st.interval = first;
        let d = jitter(first);
        st.next_probe = Some((now + d, SystemTime::now() + d));
        st.score = None;
        st.last_sample = None;
        Some(reason)
    }

    /// Time to wait before the next probe (zero when it is due).
    pub fn until_probe(&self) -> Duration {
        let st = self.st.lock();
        match st.next_probe {
            Some((t, _)) => t.saturating_duration_since(Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// A failed probe doubles the interval, up to the cap.
    pub fn on_probe_failure(&self) {
        let mut st = self.st.lock();
        st.interval = (st.interval * 2)
            .min(self.p.probe_max)
            .max(Duration::from_millis(1));
        let d = jitter(st.interval);
        st.next_probe = Some((Instant::now() + d, SystemTime::now() + d));
    }

    /// A successful probe: up again with a clean slate. True when this call changed the state.
    pub fn on_probe_success(&self) -> bool {
        let mut st = self.st.lock();
        st.failures.clear();
        st.down_since = None;
        st.next_probe = None;
        st.score = None;
        st.last_sample = None;
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// A latency sample in µs: EWMA with α = 0.2, the first sample sets it.
    pub fn sample(&self, micros: f64) {
        let mut st = self.st.lock();
        let now = Instant::now();
        let expired = st
            .last_sample
            .is_none_or(|t| now.duration_since(t) > self.p.score_ttl);
        st.score = match (st.score, expired) {
            (Some(s), false) => Some(s + 0.2 * (micros - s)),
            _ => Some(micros),
        };
        st.last_sample = Some(now);
    }

    /// The latency EWMA in µs; `None` when unknown, expired or down.
    pub fn score(&self) -> Option<f64> {
        if !self.is_up() {
            return None;
        }
        let st = self.st.lock();
        match (st.score, st.last_sample) {
            (Some(s), Some(t)) if t.elapsed() <= self.p.score_ttl => Some(s),
            _ => None,
        }
    }

    pub fn view(&self) -> HealthView {
        let up = self.is_up();
        let score = self.score();
        let st = self.st.lock();
        HealthView {
            up,
            score,
            failures: st.failures.len(),
            down_since: st.down_since.map(|(_, w)| w),
            next_probe: st.next_probe.map(|(_, w)| w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> HealthParams {
        HealthParams {
            max_errors: 3,
            error_window: Duration::from_secs(10),
            dial_silence: Duration::from_millis(500),
            probe_interval: Duration::from_millis(100),
            probe_max: Duration::from_millis(350),
            score_ttl: Duration::from_secs(10),
        }
    }

    #[test]
    fn connect_failure_is_hard_down() {
        let h = Health::new(params());
        assert!(h.is_up());
        assert_eq!(h.on_failure(true), Some(DownReason::Connect));
        assert!(!h.is_up());
        // Already down: no second transition.
        assert_eq!(h.on_failure(true), None);
        let wait = h.until_probe();
        assert!(wait >= Duration::from_millis(400) && wait <= Duration::from_millis(560));
        assert!(h.on_probe_success());
        assert!(h.is_up());
        assert!(!h.on_probe_success());
    }

    #[test]
    fn soft_down_after_max_errors_and_success_resets() {
        let h = Health::new(params());
        assert_eq!(h.on_failure(false), None);
        assert_eq!(h.on_failure(false), None);
        h.on_success();
        assert_eq!(h.on_failure(false), None);
        assert_eq!(h.on_failure(false), None);
        assert_eq!(h.on_failure(false), Some(DownReason::Errors));
        assert!(!h.is_up());
        assert!(h.until_probe() <= Duration::from_millis(115));
        // Backoff doubles up to the cap (with ±10% jitter).
        h.on_probe_failure();
        assert!(h.until_probe() <= Duration::from_millis(225));
        h.on_probe_failure();
        h.on_probe_failure();
        let w = h.until_probe();
        assert!(
            w >= Duration::from_millis(300) && w <= Duration::from_millis(390),
            "{w:?}"
        );
        assert_eq!(h.view().failures, 3);
    }

    #[test]
    fn ewma() {
        let h = Health::new(params());
        assert_eq!(h.score(), None);
        h.sample(1000.0);
        assert_eq!(h.score(), Some(1000.0));
        h.sample(2000.0);
        assert_eq!(h.score(), Some(1200.0));
        h.on_failure(true);
        assert_eq!(h.score(), None);
        h.on_probe_success();
        assert_eq!(h.score(), None);
    }
}
