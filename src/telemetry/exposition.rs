//! Reading this node's own Prometheus exposition back: totals per metric (summed over labels,
//! or split by one label) and quantiles of a histogram from its cumulative buckets. The
//! console shows what `/metrics` shows, from the same numbers, without a second registry.

use std::collections::HashMap;

/// One rendering of `/metrics`, parsed.
#[derive(Debug, Default)]
pub struct Exposition {
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Exposition {
    /// Parses the text format; lines it cannot read (comments, anything unexpected) are skipped.
    pub fn parse(text: &str) -> Exposition {
        let samples = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(sample).collect();
        Exposition { samples }
    }

    /// The sum of every series of `name` (0 when there is none).
    pub fn total(&self, name: &str) -> f64 {
        // A fold from +0.0: an empty float sum is -0.0, which JSON shows as such.
        self.samples.iter().filter(|s| s.name == name).fold(0.0, |acc, s| acc + s.value)
    }

    /// The series of `name` summed by the value of `label`.
    pub fn by_label(&self, name: &str, label: &str) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let key = s.labels.iter().find(|(k, _)| k == label).map(|(_, v)| v.clone()).unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }

    /// The `q` quantile (0..1) of histogram `name` over all its series since the node
    /// started, in the histogram's unit: the upper bound of the bucket it falls in (a bucket
    /// is all a histogram knows). `None` without observations.
    pub fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut bounds: Vec<(f64, f64)> = Vec::new();
        for s in self.samples.iter().filter(|s| s.name == bucket) {
            let Some(le) = s.labels.iter().find(|(k, _)| k == "le") else { continue };
            let bound = if le.1 == "+Inf" { f64::INFINITY } else { le.1.parse().ok()? };
            match bounds.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, count)) => *count += s.value,
                None => bounds.push((bound, s.value)),
            }
        }
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let all = bounds.last()?.1;
        if all <= 0.0 {
            return None;
        }
        let rank = q * all;
        bounds.iter().find(|(_, count)| *count >= rank).map(|(bound, _)| *bound)
    }
}

/// `name{a="x",b="y"} 1.5` → a sample.
fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series.trim(), Vec::new()),
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// `a="x",b="y"` → pairs (values are ours: no escaped quotes or commas inside them).
fn labels(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE switchboard_signaling_messages_total counter
switchboard_signaling_messages_total{type=\"offer\"} 3
switchboard_signaling_messages_total{type=\"chat\"} 4
switchboard_ws_connections 2
switchboard_join_seconds_bucket{le=\"0.001\"} 10
switchboard_join_seconds_bucket{le=\"0.005\"} 90
switchboard_join_seconds_bucket{le=\"0.01\"} 99
switchboard_join_seconds_bucket{le=\"+Inf\"} 100
switchboard_join_seconds_sum 0.3
switchboard_join_seconds_count 100
";

    #[test]
    fn totals_and_labels() {
        let e = Exposition::parse(TEXT);
        assert_eq!(e.total("switchboard_signaling_messages_total"), 7.0);
        assert_eq!(e.total("switchboard_ws_connections"), 2.0);
        assert_eq!(e.total("missing"), 0.0);
        assert!(e.total("missing").is_sign_positive());
        assert_eq!(e.by_label("switchboard_signaling_messages_total", "type")["chat"], 4.0);
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let e = Exposition::parse(TEXT);
        assert_eq!(e.quantile("switchboard_join_seconds", 0.5), Some(0.005));
        assert_eq!(e.quantile("switchboard_join_seconds", 0.99), Some(0.01));
        assert_eq!(e.quantile("switchboard_join_seconds", 1.0), Some(f64::INFINITY));
        assert_eq!(e.quantile("switchboard_relay_seconds", 0.5), None);
    }
}
