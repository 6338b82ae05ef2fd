//! A rate measured over sampled windows, as Kafka's quota sensors measure it: a ring
//! of `samples` windows of `window_ms` each; a window starts at the first event after
//! the previous one ended, windows older than the whole ring are forgotten, and the
//! elapsed time is never taken below `samples - 1` windows (so a client's first burst
//! is spread over that span instead of reading as an enormous rate). Time is passed
//! in, so it is tested without sleeping.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    total: f64,
}

/// See the module comment.
#[derive(Debug, Clone)]
pub struct SampledRate {
    samples: VecDeque<Sample>,
    count: usize,
    window_ms: i64,
}

impl SampledRate {
    pub fn new(count: usize, window_ms: i64) -> Self {
        SampledRate {
            samples: VecDeque::with_capacity(count.max(1)),
            count: count.max(1),
            window_ms: window_ms.max(1),
        }
    }

    fn purge(&mut self, now_ms: i64) {
        let horizon = self.count as i64 * self.window_ms;
        while self
            .samples
            .front()
            .is_some_and(|s| now_ms - s.start_ms >= horizon)
        {
            self.samples.pop_front();
        }
    }

    /// Adds `value` at `now_ms`.
    pub fn record(&mut self, value: f64, now_ms: i64) {
        self.purge(now_ms);
        let open = self
            .samples
            .back()
            .is_some_and(|s| now_ms - s.start_ms < self.window_ms);
        if !open {
            if self.samples.len() == self.count {
                self.samples.pop_front();
            }
            self.samples.push_back(Sample {
                start_ms: now_ms,
                total: 0.0,
            });
        }
        if let Some(s) = self.samples.back_mut() {
            s.total += value;
        }
    }

    /// The span the rate is taken over at `now_ms`, in milliseconds.
    pub fn window_ms(&mut self, now_ms: i64) -> i64 {
        self.purge(now_ms);
        let oldest = self.samples.front().map_or(now_ms, |s| s.start_ms);
        let mut elapsed = (now_ms - oldest).max(0);
        let min_full = self.count as i64 - 1;
        let full = elapsed / self.window_ms;
        if full < min_full {
            elapsed += (min_full - full) * self.window_ms;
        }
        elapsed.max(1)
    }

    /// Units per second at `now_ms`.
    pub fn rate(&mut self, now_ms: i64) -> f64 {
        let window = self.window_ms(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.total).sum();
        total * 1000.0 / window as f64
    }

    /// Whether nothing was recorded within the ring's span.
    pub fn is_idle(&mut self, now_ms: i64) -> bool {
        self.purge(now_ms);
        self.samples.is_empty()
    }
}

/// How long a client must stay quiet for `rate` to fall back to `bound`, over a
/// measuring span of `window_ms` (Kafka: (rate - bound) / bound × window), capped at
/// `max_ms`; zero when within the bound.
pub fn throttle_ms(rate: f64, bound: f64, window_ms: i64, max_ms: i64) -> i64 {
    if rate <= bound || bound <= 0.0 {
        return 0;
    }
    let t = (rate - bound) / bound * window_ms as f64;
    (t.round() as i64).clamp(0, max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_burst_is_spread_over_the_minimum_span() {
        let mut r = SampledRate::new(11, 1000);
        r.record(10_000.0, 0);
        // Ten full windows at least: 10 000 units over 10 s.
        assert_eq!(r.window_ms(0), 10_000);
        assert!((r.rate(0) - 1000.0).abs() < 1e-9);
        assert_eq!(r.window_ms(500), 10_500);
    }

    #[test]
    fn a_steady_rate_reads_as_itself_and_old_windows_are_forgotten() {
        let mut r = SampledRate::new(11, 1000);
        for t in 0..30_000i64 {
            if t % 100 == 0 {
                r.record(50.0, t); // 500 per second
            }
        }
        let rate = r.rate(30_000);
        assert!((rate - 500.0).abs() < 30.0, "{rate}");
        assert!(!r.is_idle(30_000));
        assert!(r.is_idle(30_000 + 11_000));
        assert_eq!(r.rate(30_000 + 11_000), 0.0);
    }

    #[test]
    fn throttle_is_the_time_to_fall_back_to_the_bound() {
        // Twice the bound over 10 s: 10 s of silence halves the rate.
        assert_eq!(throttle_ms(200.0, 100.0, 10_000, 60_000), 10_000);
        assert_eq!(throttle_ms(110.0, 100.0, 10_000, 60_000), 1_000);
        assert_eq!(throttle_ms(90.0, 100.0, 10_000, 60_000), 0);
        assert_eq!(throttle_ms(1e12, 1.0, 10_000, 11_000), 11_000);
    }
}
