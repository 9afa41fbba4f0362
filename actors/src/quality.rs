//! Connection quality from a client's WebRTC statistics, and the audio-only fallback policy.
//!
//! The score is the R factor of a simplified ITU-T G.107 E-model (after Cole and Rosenbluth,
//! "Voice over IP performance monitoring", 2001), for a codec without intrinsic impairment
//! (Opus):
//!
//! - effective one-way delay `d = rtt / 2 + 2 * jitter + 10 ms`;
//! - delay impairment `Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`;
//! - loss impairment `Ie_eff = 95 * Ppl / (Ppl + 20)` (Ppl: packet loss in percent, 20: the
//!   loss robustness of a codec with loss concealment);
//! - `R = 93.2 - Id - Ie_eff`, clamped to 0..100; MOS from R by the standard mapping.
//!
//! Video also needs bandwidth, so the level is the worse of what R and the available outgoing
//! bitrate allow: `good` (R ≥ 80, ≥ 300 kbit/s), `fair` (R ≥ 60, ≥ 150 kbit/s), else `poor`.
//!
//! The fallback is hysteretic: a peer goes audio-only after its quality has been `poor`
//! without a break for `fallback_after`, and gets video back only after it has been `good`
//! (not merely `fair`) without a break for `recover_after`. Time is the samples' own
//! timestamps (getStats reports carry one), so a burst of samples cannot fake a duration.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One statistics sample, as a browser's getStats gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSample {
    /// When it was taken, unix milliseconds (the report's `timestamp`).
    pub timestamp: f64,
    /// Round-trip time, seconds.
    #[serde(default)]
    pub round_trip_time: f64,
    /// Fraction of packets lost, 0..1.
    #[serde(default)]
    pub fraction_lost: f64,
    /// Jitter, seconds.
    #[serde(default)]
    pub jitter: f64,
    /// Available outgoing bitrate, bits per second; absent means unknown (not limiting).
    #[serde(default)]
    pub available_outgoing_bitrate: Option<f64>,
}

impl StatsSample {
    /// Checks the values are numbers in range; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
        if !self.timestamp.is_finite() || self.timestamp <= 0.0 {
            return Err("timestamp must be a positive number of milliseconds".into());
        }
        if !ok(self.round_trip_time, 60.0) {
            return Err("roundTripTime must be 0 to 60 seconds".into());
        }
        if !ok(self.fraction_lost, 1.0) {
            return Err("fractionLost must be between 0 and 1".into());
        }
        if !ok(self.jitter, 60.0) {
            return Err("jitter must be 0 to 60 seconds".into());
        }
        if self.available_outgoing_bitrate.is_some_and(|b| !ok(b, 1e11)) {
            return Err("availableOutgoingBitrate must be a non-negative number of bits per second".into());
        }
        Ok(())
    }
}

/// Quality level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityLevel {
    /// Fine for video.
    Good,
    /// Usable.
    Fair,
    /// Too poor for video.
    Poor,
}

impl QualityLevel {
    /// The wire and metric spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Good => "good",
            QualityLevel::Fair => "fair",
            QualityLevel::Poor => "poor",
        }
    }
}

/// The score of one sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quality {
    /// E-model R factor, 0..100.
    pub r: f64,
    /// Mean opinion score, 1..4.5.
    pub mos: f64,
    /// Level.
    pub level: QualityLevel,
}

/// Scores one sample.
pub fn score(s: &StatsSample) -> Quality {
    let d = s.round_trip_time * 1000.0 / 2.0 + 2.0 * s.jitter * 1000.0 + 10.0;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = s.fraction_lost * 100.0;
    let ie = 95.0 * ppl / (ppl + 20.0);
    let r = (93.2 - id - ie).clamp(0.0, 100.0);
    let mos = (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5);
    let bitrate = s.available_outgoing_bitrate.unwrap_or(f64::INFINITY);
    let level = if r >= 80.0 && bitrate >= 300_000.0 {
        QualityLevel::Good
    } else if r >= 60.0 && bitrate >= 150_000.0 {
        QualityLevel::Fair
    } else {
        QualityLevel::Poor
    };
    Quality { r, mos, level }
}

/// How long quality must stay poor (good) before falling back (recovering).
#[derive(Clone, Debug)]
pub struct FallbackPolicy {
    /// Poor without a break for this long: audio only.
    pub fallback_after: Duration,
    /// Good without a break for this long: video again.
    pub recover_after: Duration,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        Self { fallback_after: Duration::from_secs(4), recover_after: Duration::from_secs(10) }
    }
}

/// What a sample changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackChange {
    /// Go audio-only.
    Fallback,
    /// Restore video.
    Recover,
}

/// One peer's quality timeline.
#[derive(Clone, Debug, Default)]
pub struct QualityTracker {
    last_timestamp: Option<f64>,
    poor_since: Option<f64>,
    good_since: Option<f64>,
    audio_only: bool,
}

impl QualityTracker {
    /// Whether the peer is in audio-only mode.
    pub fn audio_only(&self) -> bool {
        self.audio_only
    }

    /// Feeds one sample. Samples older than the last one are refused (the error says so).
    pub fn observe(
        &mut self,
        policy: &FallbackPolicy,
        sample: &StatsSample,
    ) -> Result<(Quality, Option<FallbackChange>), String> {
        if self.last_timestamp.is_some_and(|t| sample.timestamp <= t) {
            return Err("stats timestamps must increase".into());
        }
        self.last_timestamp = Some(sample.timestamp);
        let q = score(sample);
        let now = sample.timestamp;
        match q.level {
            QualityLevel::Poor => {
                self.good_since = None;
                self.poor_since.get_or_insert(now);
            }
            QualityLevel::Fair => {
                self.good_since = None;
                self.poor_since = None;
            }
            QualityLevel::Good => {
                self.poor_since = None;
                self.good_since.get_or_insert(now);
            }
        }
        let held = |since: Option<f64>, d: Duration| since.is_some_and(|s| now - s >= d.as_secs_f64() * 1000.0);
        let change = if !self.audio_only && held(self.poor_since, policy.fallback_after) {
            self.audio_only = true;
            Some(FallbackChange::Fallback)
        } else if self.audio_only && held(self.good_since, policy.recover_after) {
            self.audio_only = false;
            Some(FallbackChange::Recover)
        } else {
            None
        };
        Ok((q, change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, rtt_ms: f64, loss: f64, kbps: f64) -> StatsSample {
        StatsSample {
            timestamp: t,
            round_trip_time: rtt_ms / 1000.0,
            fraction_lost: loss,
            jitter: 0.005,
            available_outgoing_bitrate: Some(kbps * 1000.0),
        }
    }

    #[test]
    fn scores_follow_the_e_model() {
        let clean = score(&sample(1.0, 40.0, 0.0, 2000.0));
        assert!(clean.r > 90.0 && clean.mos > 4.3, "{clean:?}");
        assert_eq!(clean.level, QualityLevel::Good);
        // 5% loss costs 19 points of R.
        let lossy = score(&sample(1.0, 40.0, 0.05, 2000.0));
        assert!((clean.r - lossy.r - 19.0).abs() < 0.5, "{lossy:?}");
        // Long delay: the 177 ms knee.
        let far = score(&sample(1.0, 600.0, 0.0, 2000.0));
        assert!(far.r < 80.0, "{far:?}");
        // Bandwidth alone can make video poor.
        assert_eq!(score(&sample(1.0, 40.0, 0.0, 100.0)).level, QualityLevel::Poor);
    }

    #[test]
    fn falls_back_after_sustained_poor_quality_and_recovers_with_hysteresis() {
        let policy = FallbackPolicy { fallback_after: Duration::from_secs(4), recover_after: Duration::from_secs(10) };
        let mut t = QualityTracker::default();
        let bad = |ts| sample(ts, 400.0, 0.2, 80.0);
        let good = |ts| sample(ts, 40.0, 0.0, 2000.0);
        let fair = |ts| sample(ts, 40.0, 0.03, 200.0);
        // Poor for 3 s, a good sample, poor again: the clock restarts, no fallback.
        for ts in [0.0, 1000.0, 2000.0, 3000.0] {
            assert_eq!(t.observe(&policy, &bad(ts + 1.0)).expect("ok").1, None);
        }
        assert_eq!(t.observe(&policy, &good(3500.0)).expect("ok").1, None);
        assert_eq!(t.observe(&policy, &bad(4000.0)).expect("ok").1, None);
        // Poor for 4 s without a break: fallback, once.
        assert_eq!(t.observe(&policy, &bad(8000.0)).expect("ok").1, Some(FallbackChange::Fallback));
        assert_eq!(t.observe(&policy, &bad(9000.0)).expect("ok").1, None);
        assert!(t.audio_only());
        // Fair is not enough to recover, however long it lasts.
        for ts in (10..40).map(|s| s as f64 * 1000.0) {
            assert_eq!(t.observe(&policy, &fair(ts)).expect("ok").1, None);
        }
        // Good for 10 s without a break: recover.
        for ts in (40..50).map(|s| s as f64 * 1000.0) {
            assert_eq!(t.observe(&policy, &good(ts)).expect("ok").1, None);
        }
        assert_eq!(t.observe(&policy, &good(50_000.0)).expect("ok").1, Some(FallbackChange::Recover));
        assert!(!t.audio_only());
        // Old samples are refused.
        assert!(t.observe(&policy, &good(1000.0)).is_err());
    }
}
