//! The Prometheus text exposition (format 0.0.4) of the registry and a scrape: per family its
//! `# HELP` and `# TYPE`, then its series sorted by labels.

use super::registry::Registry;
use super::{FAMILIES, Kind, Labels, Scrape};
use metrics::Key;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One series' samples, ready to write.
enum Value {
    Number(f64),
    Buckets(Vec<(f64, u64)>, u64, f64),
}

type Series = Vec<(Vec<(String, String)>, Value)>;

fn labels_of(key: &Key) -> Vec<(String, String)> {
    // In the order the series was first registered with (call sites write `pipeline` first).
    key.labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

fn owned(labels: &Labels) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Renders every family with a series: the registry's and the scrape's.
pub fn render(registry: &Registry, scrape: &Scrape) -> String {
    let mut by_name: BTreeMap<String, Series> = BTreeMap::new();
    for (key, v) in registry.counters() {
        let labels = labels_of(&key);
        by_name
            .entry(key.name().to_owned())
            .or_default()
            .push((labels, Value::Number(v as f64)));
    }
    for (key, v) in registry.gauges() {
        let labels = labels_of(&key);
        by_name
            .entry(key.name().to_owned())
            .or_default()
            .push((labels, Value::Number(v)));
    }
    for (key, h) in registry.histograms() {
        let (buckets, count, sum) = h.snapshot();
        let labels = labels_of(&key);
        by_name
            .entry(key.name().to_owned())
            .or_default()
            .push((labels, Value::Buckets(buckets, count, sum)));
    }
    for family in FAMILIES {
        for (labels, v) in scrape.samples(family.name) {
            by_name
                .entry(family.name.to_owned())
                .or_default()
                .push((owned(labels), Value::Number(*v)));
        }
    }
    let mut out = String::with_capacity(16 * 1024);
    for family in FAMILIES {
        if let Some(mut series) = by_name.remove(family.name) {
            write_family(&mut out, family.name, family.kind, family.help, &mut series);
        }
    }
    // Series recorded under a name missing from the table still get HELP and TYPE.
    for (name, mut series) in by_name {
        let kind = match series.first() {
            Some((_, Value::Buckets(..))) => Kind::Histogram,
            _ if name.ends_with("_total") => Kind::Counter,
            _ => Kind::Gauge,
        };
        let help = "Not described in src/metrics.rs.";
        write_family(&mut out, &name, kind, help, &mut series);
    }
    out
}

fn write_family(out: &mut String, name: &str, kind: Kind, help: &str, series: &mut Series) {
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
    for (labels, value) in series.iter() {
        match value {
            Value::Number(v) => sample(out, name, "", labels, None, *v),
            Value::Buckets(buckets, count, sum) => {
                for (bound, cumulative) in buckets {
                    let le = format_value(*bound);
                    sample(out, name, "_bucket", labels, Some(&le), *cumulative as f64);
                }
                sample(out, name, "_bucket", labels, Some("+Inf"), *count as f64);
                sample(out, name, "_sum", labels, None, *sum);
                sample(out, name, "_count", labels, None, *count as f64);
            }
        }
    }
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let all = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(le.map(|le| ("le", le)));
        for (k, v) in all {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

/// A sample value as the text format spells it (`+Inf`, `-Inf`, `NaN`; integers without a
/// fraction).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ProcessStats, REJECTIONS};

    #[test]
    fn values_and_labels_are_spelled_as_the_text_format_wants() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_is_written_with_help_and_type_before_its_samples() {
        let registry = Registry::default();
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        let key = Key::from_parts(REJECTIONS.name, vec![metrics::Label::new("reason", "busy")]);
        metrics::Recorder::register_counter(&registry, &key, &meta).increment(2);
        let hist = Key::from_name("eddy_http_request_duration_seconds");
        metrics::Recorder::register_histogram(&registry, &hist, &meta).record(0.003);
        let text = render(&registry, &Scrape::new(&ProcessStats::default()));
        assert!(text.contains("# HELP eddy_rejections_total Requests answered 503"));
        assert!(text.contains(
            "# TYPE eddy_rejections_total counter\neddy_rejections_total{reason=\"busy\"} 2\n"
        ));
        assert!(text.contains("eddy_http_request_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("eddy_http_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("eddy_http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("eddy_http_request_duration_seconds_count 1\n"));
        assert!(text.contains("eddy_build_info{version=\""));
    }
}
