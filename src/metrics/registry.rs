//! eddy's recorder behind the `metrics` facade: counters, gauges and histograms by key (name
//! and labels), each an atomic that its handles share, and the removal of a deleted
//! pipeline's series.
//!
//! Invariant: one series per key for the life of the process unless removed; a handle taken
//! before a removal keeps counting into a series nobody renders (its pipeline is gone), and a
//! registration after it starts a new series at zero.

use super::family_of;
use metrics::atomics::AtomicU64;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Once, RwLock};

/// Buckets used for a histogram not in the table.
const DEFAULT_BUCKETS: &[f64] = &[0.001, 0.01, 0.1, 1.0, 10.0];

/// A histogram: a count per bucket (the last one above every bound) and the sum.
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// f64 bits.
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// (upper bound, cumulative count) per bound, then the total count and the sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Acquire);
            out.push((*bound, cumulative));
        }
        let total = cumulative + self.counts[self.bounds.len()].load(Ordering::Acquire);
        let sum = f64::from_bits(self.sum.load(Ordering::Acquire));
        (out, total, sum)
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // Bucket `le = b` holds values <= b.
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::AcqRel);
        let _ = self
            .sum
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// Every registered series.
#[derive(Debug, Default)]
pub struct Registry {
    // std RwLock: held only to look up or insert an Arc, never across an await.
    counters: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    gauges: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    histograms: RwLock<HashMap<Key, Arc<Buckets>>>,
}

fn get_or_insert<T>(
    map: &RwLock<HashMap<Key, Arc<T>>>,
    key: &Key,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    if let Some(found) = map.read().expect("metrics lock").get(key) {
        return found.clone();
    }
    map.write()
        .expect("metrics lock")
        .entry(key.clone())
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

impl Registry {
    /// Every counter: (key, value).
    pub fn counters(&self) -> Vec<(Key, u64)> {
        let map = self.counters.read().expect("metrics lock");
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Acquire)))
            .collect()
    }

    /// Every gauge: (key, value).
    pub fn gauges(&self) -> Vec<(Key, f64)> {
        let map = self.gauges.read().expect("metrics lock");
        map.iter()
            .map(|(k, v)| (k.clone(), f64::from_bits(v.load(Ordering::Acquire))))
            .collect()
    }

    /// Every histogram.
    pub fn histograms(&self) -> Vec<(Key, Arc<Buckets>)> {
        let map = self.histograms.read().expect("metrics lock");
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Drops every series labelled `pipeline = name`.
    pub fn forget_pipeline(&self, name: &str) {
        let keep = |key: &Key| {
            !key.labels()
                .any(|l| l.key() == "pipeline" && l.value() == name)
        };
        self.counters
            .write()
            .expect("metrics lock")
            .retain(|k, _| keep(k));
        self.gauges
            .write()
            .expect("metrics lock")
            .retain(|k, _| keep(k));
        self.histograms
            .write()
            .expect("metrics lock")
            .retain(|k, _| keep(k));
    }
}

impl Recorder for Registry {
    // HELP texts come from the family table, not from `describe_*` calls.
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(get_or_insert(&self.counters, key, || AtomicU64::new(0)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(get_or_insert(&self.gauges, key, || {
            AtomicU64::new(0f64.to_bits())
        }))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = family_of(key.name()).map_or(DEFAULT_BUCKETS, |f| f.buckets);
        Histogram::from_arc(get_or_insert(&self.histograms, key, || {
            Buckets::new(bounds)
        }))
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process's registry (what the facade records into once [`install`] ran).
pub fn global() -> &'static Registry {
    &REGISTRY
}

struct Global;

impl Recorder for Global {
    fn describe_counter(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        REGISTRY.describe_counter(k, u, d)
    }
    fn describe_gauge(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        REGISTRY.describe_gauge(k, u, d)
    }
    fn describe_histogram(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        REGISTRY.describe_histogram(k, u, d)
    }
    fn register_counter(&self, key: &Key, m: &Metadata<'_>) -> Counter {
        REGISTRY.register_counter(key, m)
    }
    fn register_gauge(&self, key: &Key, m: &Metadata<'_>) -> Gauge {
        REGISTRY.register_gauge(key, m)
    }
    fn register_histogram(&self, key: &Key, m: &Metadata<'_>) -> Histogram {
        REGISTRY.register_histogram(key, m)
    }
}

/// Makes the registry the process's `metrics` recorder (once; later calls do nothing) and
/// registers the series that exist from start.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another recorder is installed: then ours renders what it alone sees.
        let _ = metrics::set_global_recorder(Global);
        for reason in super::REJECTION_REASONS {
            metrics::counter!(super::REJECTIONS.name, "reason" => *reason).increment(0);
        }
    });
}

/// Drops every series of pipeline `name` (it was deleted).
pub fn forget_pipeline(name: &str) {
    REGISTRY.forget_pipeline(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &'static str, pipeline: &str) -> Key {
        Key::from_parts(
            name,
            vec![metrics::Label::new("pipeline", pipeline.to_owned())],
        )
    }

    #[test]
    fn handles_of_one_key_share_a_series() {
        let r = Registry::default();
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        r.register_counter(&key("x_total", "a"), &meta).increment(2);
        r.register_counter(&key("x_total", "a"), &meta).increment(3);
        assert_eq!(r.counters()[0].1, 5);
    }

    #[test]
    fn forgetting_a_pipeline_drops_its_series_only() {
        let r = Registry::default();
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let old = r.register_counter(&key("x_total", "a"), &meta);
        r.register_counter(&key("x_total", "b"), &meta).increment(1);
        r.register_histogram(&key("eddy_batch_duration_seconds", "a"), &meta)
            .record(0.1);
        r.forget_pipeline("a");
        assert_eq!(r.counters().len(), 1);
        assert!(r.histograms().is_empty());
        old.increment(1);
        assert_eq!(
            r.counters().len(),
            1,
            "an old handle does not bring it back"
        );
        let _new = r.register_counter(&key("x_total", "a"), &meta);
        let fresh = r
            .counters()
            .into_iter()
            .find(|(k, _)| k == &key("x_total", "a"));
        assert_eq!(
            fresh.map(|(_, v)| v),
            Some(0),
            "a new pipeline of that name starts at 0"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let b = Buckets::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            b.record(v);
        }
        let (buckets, count, sum) = b.snapshot();
        assert_eq!(buckets, [(1.0, 2), (2.0, 3)]);
        assert_eq!((count, sum), (4, 6.0));
    }
}
