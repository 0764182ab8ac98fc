//! One JSON object per line: `{"scenario", "n", "p50_us", "p99_us", "p999_us", "max_us",
//! "per_sec", ...}` plus scenario-specific fields.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies of one scenario, in nanoseconds.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Self {
        Self {
            // 1 ns to 100 s, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, 100_000_000_000);
        self.histogram.saturating_record(ns);
    }

    /// Adds `other`'s recordings to these.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn quantile_us(&self, q: f64) -> f64 {
        round2(self.histogram.value_at_quantile(q) as f64 / 1000.0)
    }

    /// The JSON line for this scenario; `elapsed` is the wall time the `n` operations took.
    pub fn line(&self, scenario: &str, elapsed: Duration, extra: Value) -> Value {
        let n = self.histogram.len();
        let mut line = Map::new();
        line.insert("scenario".into(), json!(scenario));
        line.insert("n".into(), json!(n));
        line.insert("p50_us".into(), json!(self.quantile_us(0.5)));
        line.insert("p99_us".into(), json!(self.quantile_us(0.99)));
        line.insert("p999_us".into(), json!(self.quantile_us(0.999)));
        line.insert(
            "max_us".into(),
            json!(round2(self.histogram.max() as f64 / 1000.0)),
        );
        let per_sec = if elapsed.is_zero() {
            0.0
        } else {
            n as f64 / elapsed.as_secs_f64()
        };
        line.insert("per_sec".into(), json!(per_sec.round()));
        if let Value::Object(extra) = extra {
            line.extend(extra);
        }
        Value::Object(line)
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
