//! A histogram fed in batches: the observations of one answer are counted where
//! they happen, in memory only that answer touches, and added to the shared
//! histogram every [`BATCH`] observations and when the answer ends.
//!
//! `prometheus_client`'s `Histogram` takes a lock for every observation and
//! searches its bounds in shared memory. A token gap is observed on every token of
//! every answer, from both worker threads: that lock's cache line moved between
//! the cores on nearly every token. Here the bounds are powers of two times a
//! start, so an observation's bucket is read from the bits of a division, and
//! the counts live in the batch.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Observations a batch holds before it adds them to its histogram: a long
/// answer's gaps show up while it runs, and the lock is taken once per this many.
/// Below 256, so a batch counts in bytes: it stays within a cache line or two of
/// the answer's memory.
pub const BATCH: u8 = 64;

/// The most finite bounds a histogram has.
const MAX_BOUNDS: usize = 31;

/// A Prometheus histogram with the bounds `start × 2^i` for `i` in `0..bounds`
/// (and `+Inf`), whose observations arrive in [`HistogramBatch`]es.
#[derive(Debug, Clone)]
pub struct BatchedHistogram {
    start: f64,
    /// Finite bounds; the bucket after them is `+Inf`.
    bounds: usize,
    totals: Arc<Mutex<Totals>>,
}

/// Counts per bucket (not cumulative), the last one `+Inf`.
type Buckets = [u64; MAX_BOUNDS + 1];

#[derive(Debug)]
struct Totals {
    sum: f64,
    count: u64,
    buckets: Buckets,
}

impl BatchedHistogram {
    /// A histogram with the bounds `start`, `2 × start`, … (`bounds` of them,
    /// at most 31) and `+Inf`: `exponential_buckets(start, 2.0, bounds)`.
    pub fn doubling(start: f64, bounds: usize) -> Self {
        Self {
            start,
            bounds: bounds.min(MAX_BOUNDS),
            totals: Arc::new(Mutex::new(Totals {
                sum: 0.0,
                count: 0,
                buckets: [0; MAX_BOUNDS + 1],
            })),
        }
    }

    /// An empty batch, added to this histogram when it is dropped.
    pub fn batch(&self) -> HistogramBatch<'_> {
        HistogramBatch {
            histogram: self,
            sum: 0.0,
            count: 0,
            buckets: [0; MAX_BOUNDS + 1],
        }
    }

    /// The histogram's count and sum.
    #[cfg(test)]
    fn count_and_sum(&self) -> (u64, f64) {
        let totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        (totals.count, totals.sum)
    }

    /// The index of the first bucket whose bound is at least `value`.
    fn bucket(&self, value: f64) -> usize {
        let infinite = self.bounds;
        if value.is_nan() {
            return infinite;
        }
        if value <= self.start {
            return 0;
        }
        // The ratio is above 1: its bucket is ⌈log2(ratio)⌉, the binary exponent,
        // plus one unless the ratio is a power of two (a value on a bound belongs
        // to that bound's bucket). Scaling by a power of two is exact, so a value
        // on a bound divides to exactly that power.
        let bits = (value / self.start).to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as usize - 1023;
        let above = usize::from(bits & ((1 << 52) - 1) != 0);
        (exponent + above).min(infinite)
    }

    /// Adds `batch`'s observations and empties it.
    fn take(&self, batch: &mut HistogramBatch<'_>) {
        let mut totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        totals.sum += std::mem::take(&mut batch.sum);
        totals.count += u64::from(std::mem::take(&mut batch.count));
        for (total, n) in totals.buckets.iter_mut().zip(&mut batch.buckets) {
            *total += u64::from(std::mem::take(n));
        }
    }
}

/// Observations not yet in their histogram; they go in when this is dropped.
#[derive(Debug)]
pub struct HistogramBatch<'h> {
    histogram: &'h BatchedHistogram,
    sum: f64,
    count: u8,
    buckets: [u8; MAX_BOUNDS + 1],
}

impl HistogramBatch<'_> {
    /// Counts `value` in the first bucket whose bound is at least `value`.
    pub fn observe(&mut self, value: f64) {
        let bucket = self.histogram.bucket(value);
        if let Some(slot) = self.buckets.get_mut(bucket) {
            *slot += 1;
        }
        self.sum += value;
        self.count += 1;
        if self.count >= BATCH {
            self.histogram.take(self);
        }
    }
}

impl Drop for HistogramBatch<'_> {
    fn drop(&mut self) {
        if self.count > 0 {
            self.histogram.take(self);
        }
    }
}

impl TypedMetric for BatchedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, counts) = {
            let totals = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
            (totals.sum, totals.count, totals.buckets)
        };
        let mut bound = self.start;
        let mut buckets = Vec::with_capacity(self.bounds + 1);
        for n in &counts[..self.bounds] {
            buckets.push((bound, *n));
            bound *= 2.0;
        }
        buckets.push((f64::INFINITY, counts[self.bounds]));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;

    use super::*;

    fn render(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = Registry::default();
        registry.register(name, "test", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn batches_render_as_the_same_observations_in_prometheus_histogram() {
        let (start, bounds) = (0.0001, 18);
        let mut values = vec![0.0, -1.0, 0.00005, 1e9, f64::INFINITY];
        // Every bound, and either side of it.
        for bound in exponential_buckets(start, 2.0, bounds as u16) {
            values.extend([bound, bound * (1.0 - 1e-9), bound * (1.0 + 1e-9)]);
        }
        // And a spread between them.
        values.extend((1..2000).map(|i| f64::from(i) * 0.0000731));
        let batched = BatchedHistogram::doubling(start, bounds);
        {
            let mut first = batched.batch();
            let mut second = batched.batch();
            for (i, value) in values.iter().enumerate() {
                if i % 2 == 0 {
                    first.observe(*value);
                } else {
                    second.observe(*value);
                }
            }
        }
        let plain = Histogram::new(exponential_buckets(start, 2.0, bounds as u16));
        for value in &values {
            plain.observe(*value);
        }
        assert_eq!(render("gap", batched.clone()), render("gap", plain));
        assert_eq!(batched.count_and_sum().0, values.len() as u64);
    }

    #[test]
    fn a_batch_counts_once_it_is_dropped() {
        let histogram = BatchedHistogram::doubling(1.0, 1);
        let mut batch = histogram.batch();
        batch.observe(0.5);
        batch.observe(2.0);
        assert_eq!(histogram.count_and_sum(), (0, 0.0));
        drop(batch);
        assert_eq!(histogram.count_and_sum(), (2, 2.5));
        drop(histogram.batch());
        assert_eq!(histogram.count_and_sum(), (2, 2.5));
    }

    #[test]
    fn a_full_batch_counts_before_it_is_dropped() {
        let histogram = BatchedHistogram::doubling(1.0, 1);
        let mut batch = histogram.batch();
        for _ in 0..=BATCH {
            batch.observe(0.5);
        }
        assert_eq!(histogram.count_and_sum().0, u64::from(BATCH));
        drop(batch);
        assert_eq!(histogram.count_and_sum().0, u64::from(BATCH) + 1);
    }
}
