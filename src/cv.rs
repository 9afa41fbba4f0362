//! Snapshot analysis: a snapshot compared with its baseline. Both go to luma; the snapshot is
//! resampled to the baseline's size; both are averaged down by Wang's automatic factor
//! (`max(1, round(min(W, H) / 256))`, as in the SSIM authors' reference code); a camera that
//! moved is found by phase correlation and moved back ([`align`]); SSIM
//! ([`ssim`]) gives a score and a map; a global brightness change with the structure intact
//! is its own verdict (`lighting`); otherwise the map's dissimilarity is thresholded, cleaned
//! and cut into regions ([`regions`]); the heatmap draws it ([`heatmap`]). Deterministic: the
//! same pair and parameters give the same result, and the result names the algorithm, its
//! version and every parameter. `docs/cv.md` describes it.

pub mod align;
pub mod gray;
pub mod heatmap;
pub mod regions;
pub mod ssim;

use gray::Gray;
use regions::Region;
use serde::{Deserialize, Serialize};

/// The algorithm's name in results.
pub const ALGORITHM: &str = "ssim-gaussian-regions";
/// Its version: raised whenever a change could change a result.
pub const VERSION: &str = "2";

/// Why an image could not be analysed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CvError {
    /// Not PNG or JPEG.
    #[error("unsupported image: {0}")]
    Format(String),
    /// Over a size or pixel limit.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// It claims to be PNG or JPEG and does not decode.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// Too small to compare (the window is 11 pixels).
    #[error("image too small: {0}")]
    TooSmall(String),
}

impl CvError {
    /// The error code clients get.
    pub fn code(&self) -> &'static str {
        match self {
            CvError::Format(_) => "unsupported_image",
            CvError::TooLarge(_) => "image_too_large",
            CvError::Corrupt(_) => "corrupt_image",
            CvError::TooSmall(_) => "image_too_small",
        }
    }
}

/// The parameters of a comparison (all of them go into the result).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Params {
    /// Mean SSIM at or above which a snapshot with no region is `unchanged`.
    pub threshold: f64,
    /// Per-window dissimilarity `(1 − SSIM) / 2` at or above which a window counts as changed.
    pub region_threshold: f32,
    /// Smallest region kept, in map cells (after downsampling).
    pub min_region_area: u32,
    /// Mean luma difference (0..1) from which a change may be lighting.
    pub lighting_delta: f64,
    /// Mean contrast-structure similarity at or above which a brightness change is lighting.
    pub lighting_structure: f64,
    /// Whether a moved camera is found (phase correlation) and moved back before comparing.
    pub align: bool,
    /// Smallest correlation peak (0..1) trusted as a shift.
    pub align_min_peak: f64,
    /// Largest shift looked for, as a fraction of each side.
    pub align_max_shift: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            threshold: 0.9,
            region_threshold: 0.15,
            min_region_area: 6,
            lighting_delta: 0.06,
            lighting_structure: 0.9,
            align: true,
            align_min_peak: 0.05,
            align_max_shift: 0.15,
        }
    }
}

/// What a comparison concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The first snapshot of its subject (no comparison made).
    Baseline,
    /// Nothing changed beyond the threshold.
    Unchanged,
    /// Something changed; see the regions.
    Changed,
    /// The scene is the same, its brightness is not.
    Lighting,
}

/// The algorithm as a result records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmInfo {
    /// [`ALGORITHM`].
    pub name: String,
    /// [`VERSION`].
    pub version: String,
    /// The comparison's parameters.
    pub params: Params,
    /// The fixed ones: window, σ, K1, K2, dynamic range, and the downsampling factor used.
    pub ssim: SsimInfo,
    /// The shift the snapshot was moved back by, in the baseline's pixels (`null`: none).
    #[serde(default)]
    pub alignment: Option<Alignment>,
}

/// A shift applied before comparing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alignment {
    /// Pixels the snapshot's content sat right of the baseline's.
    pub dx: i64,
    /// Pixels it sat below.
    pub dy: i64,
    /// The correlation peak, 0..1.
    pub peak: f64,
}

/// SSIM's fixed parameters and the factor this comparison used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SsimInfo {
    /// Window side.
    pub window: u32,
    /// Gaussian σ.
    pub sigma: f64,
    /// K1.
    pub k1: f64,
    /// K2.
    pub k2: f64,
    /// Dynamic range of the luma.
    pub dynamic_range: f64,
    /// Downsampling factor.
    pub downsample: u32,
}

/// The outcome of a comparison.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Mean SSIM, 0..1 (negative local values clamp to 0 in the mean).
    pub score: f64,
    /// Changed regions in the snapshot's pixels, largest first.
    pub regions: Vec<Region>,
    /// The verdict.
    pub verdict: Verdict,
    /// Mean luma of the snapshot minus the baseline's.
    pub brightness_delta: f64,
    /// The heatmap, a PNG.
    pub heatmap_png: Vec<u8>,
    /// The algorithm and its parameters.
    pub algorithm: AlgorithmInfo,
}

fn round6(v: f32) -> f64 {
    (f64::from(v) * 1e6).round() / 1e6
}

/// Wang's automatic downsampling factor.
pub fn downsample_factor(width: usize, height: usize) -> usize {
    ((width.min(height) as f64 / 256.0).round() as usize).max(1)
}

/// Compares `snapshot` with `baseline`.
pub fn compare(snapshot: &Gray, baseline: &Gray, params: &Params) -> Result<Analysis, CvError> {
    let f = downsample_factor(baseline.width, baseline.height);
    let side = ssim::WINDOW * f;
    if baseline.width < side
        || baseline.height < side
        || snapshot.width < ssim::WINDOW
        || snapshot.height < ssim::WINDOW
    {
        return Err(CvError::TooSmall(format!("both images need at least {} pixels on a side", ssim::WINDOW)));
    }
    let resized = snapshot.resized(baseline.width, baseline.height);
    let (mut x, y) = (resized.downsampled(f), baseline.downsampled(f));
    let shift = params
        .align
        .then(|| align::phase_shift(&x, &y, params.align_min_peak, params.align_max_shift))
        .flatten()
        .filter(|s| (s.dx, s.dy) != (0, 0));
    if let Some(shift) = shift {
        x = align::undo_shift(&x, &y, shift);
    }
    let maps = ssim::ssim(&x, &y);
    let score = maps.ssim.iter().map(|&v| f64::from(v.max(0.0))).sum::<f64>() / maps.ssim.len().max(1) as f64;
    let dissimilarity: Vec<f32> = maps.ssim.iter().map(|&s| ((1.0 - s) / 2.0).clamp(0.0, 1.0)).collect();
    let brightness_delta = resized.mean() - baseline.mean();
    let lighting = brightness_delta.abs() >= params.lighting_delta && maps.mean_cs() >= params.lighting_structure;
    let regions = if lighting {
        Vec::new()
    } else {
        let mask = regions::threshold(&dissimilarity, maps.width, maps.height, params.region_threshold).cleaned();
        let (sx, sy) = (snapshot.width as f64 / baseline.width as f64, snapshot.height as f64 / baseline.height as f64);
        let offset = (ssim::WINDOW / 2) as u32;
        // A region found over the baseline lies `shift` further in the snapshot.
        let (dx, dy) = shift.map_or((0, 0), |s| (i64::from(s.dx), i64::from(s.dy)));
        let moved = |v: u32, d: i64| (i64::from(v) + d).max(0) as u32;
        regions::components(&mask, &dissimilarity, params.min_region_area)
            .into_iter()
            .map(|r| Region { x: moved(r.x, dx), y: moved(r.y, dy), ..r })
            .map(|r| r.scaled(offset, f as f64, sx, sy, snapshot.width as u32, snapshot.height as u32))
            .collect()
    };
    let verdict = if lighting {
        Verdict::Lighting
    } else if regions.is_empty() && score >= params.threshold {
        Verdict::Unchanged
    } else {
        Verdict::Changed
    };
    let heatmap_png = heatmap::render(&dissimilarity, maps.width, maps.height)?;
    let algorithm = AlgorithmInfo {
        name: ALGORITHM.into(),
        version: VERSION.into(),
        params: params.clone(),
        ssim: SsimInfo {
            window: ssim::WINDOW as u32,
            // As written in the paper (the f32 constants widened would print 0.00999999977...).
            sigma: round6(ssim::SIGMA),
            k1: round6(ssim::K1),
            k2: round6(ssim::K2),
            dynamic_range: 1.0,
            downsample: f as u32,
        },
        alignment: shift.map(|s| Alignment {
            dx: i64::from(s.dx) * f as i64,
            dy: i64::from(s.dy) * f as i64,
            peak: round6(s.peak as f32),
        }),
    };
    Ok(Analysis { score, regions, verdict, brightness_delta, heatmap_png, algorithm })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured scene (smooth gradients and a grid), like a frame of a room; drawn in
    /// coordinates relative to its size, so two sizes show the same scene.
    fn scene(w: usize, h: usize) -> Gray {
        let mut g = Gray::filled(w, h, 0.0);
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let grid = if ((u * 20.0) as u32 + (v * 15.0) as u32).is_multiple_of(2) { 0.15 } else { 0.0 };
                let value = 0.25 + 0.35 * u + 0.15 * (v * 27.0).sin() + grid;
                g.set(x, y, value.clamp(0.0, 1.0));
            }
        }
        g
    }

    #[test]
    fn identical_images_score_one_and_are_unchanged() {
        let a = scene(320, 240);
        let r = compare(&a, &a, &Params::default()).unwrap();
        assert!((r.score - 1.0).abs() < 1e-6, "{}", r.score);
        assert_eq!(r.verdict, Verdict::Unchanged);
        assert!(r.regions.is_empty());
        assert_eq!(r.algorithm.ssim.downsample, 1);
        assert_eq!(&r.heatmap_png[1..4], b"PNG");
    }

    #[test]
    fn an_added_box_is_found_where_it_was_drawn() {
        let base = scene(640, 480);
        let mut snap = base.clone();
        // A bright box at x 400..480, y 100..160.
        for y in 100..160 {
            for x in 400..480 {
                snap.set(x, y, 0.95);
            }
        }
        let r = compare(&snap, &base, &Params::default()).unwrap();
        assert_eq!(r.verdict, Verdict::Changed);
        assert_eq!(r.algorithm.ssim.downsample, 2);
        let biggest = &r.regions[0];
        let (cx, cy) = (biggest.x + biggest.width / 2, biggest.y + biggest.height / 2);
        assert!((400..480).contains(&cx) && (100..160).contains(&cy), "centre {cx},{cy} of {biggest:?}");
        assert!(biggest.width >= 60 && biggest.width <= 120, "{biggest:?}");
        assert!(r.score < 1.0 && r.score > 0.5, "{}", r.score);
    }

    #[test]
    fn a_brightness_shift_is_lighting() {
        let base = scene(320, 240);
        let mut snap = base.clone();
        snap.pixels.iter_mut().for_each(|p| *p = (*p * 0.7 + 0.25).min(1.0));
        let r = compare(&snap, &base, &Params::default()).unwrap();
        assert_eq!(r.verdict, Verdict::Lighting, "delta {} score {}", r.brightness_delta, r.score);
        assert!(r.brightness_delta > 0.06);
    }

    #[test]
    fn a_snapshot_of_another_size_is_compared_at_the_baseline_size() {
        let base = scene(320, 240);
        let snap = scene(640, 480);
        let r = compare(&snap, &base, &Params::default()).unwrap();
        assert!(r.score > 0.9, "{}", r.score);
        assert_eq!(r.verdict, Verdict::Unchanged);
    }

    #[test]
    fn a_moved_camera_is_aligned_and_a_change_still_found() {
        let wide = scene(400, 300);
        let crop = |g: &Gray, ox: usize, oy: usize| {
            let mut out = Gray::filled(320, 240, 0.0);
            for y in 0..240 {
                for x in 0..320 {
                    out.set(x, y, g.at(x + ox, y + oy));
                }
            }
            out
        };
        // The camera moved: the scene sits 9 pixels left and 5 up in the snapshot.
        let base = crop(&wide, 20, 20);
        let mut snap = crop(&wide, 29, 25);
        let off = Params { align: false, ..Params::default() };
        assert_eq!(compare(&snap, &base, &off).unwrap().verdict, Verdict::Changed, "unaligned, it looks changed");
        let r = compare(&snap, &base, &Params::default()).unwrap();
        let shift = r.algorithm.alignment.expect("aligned");
        assert_eq!((shift.dx, shift.dy), (-9, -5), "{shift:?}");
        assert_eq!(r.verdict, Verdict::Unchanged, "score {} regions {:?}", r.score, r.regions);
        // A box drawn into the moved snapshot is still found where it is in the snapshot.
        for y in 100..150 {
            for x in 200..260 {
                snap.set(x, y, 0.97);
            }
        }
        let r = compare(&snap, &base, &Params::default()).unwrap();
        assert_eq!(r.verdict, Verdict::Changed);
        let biggest = &r.regions[0];
        let (cx, cy) = (biggest.x + biggest.width / 2, biggest.y + biggest.height / 2);
        assert!((200..260).contains(&cx) && (100..150).contains(&cy), "centre {cx},{cy} of {biggest:?}");
    }

    #[test]
    fn tiny_images_are_refused() {
        let small = Gray::filled(8, 8, 0.5);
        assert_eq!(compare(&small, &small, &Params::default()).unwrap_err().code(), "image_too_small");
    }

    #[test]
    fn results_are_deterministic() {
        let base = scene(320, 240);
        let mut snap = base.clone();
        for y in 50..90 {
            for x in 60..120 {
                snap.set(x, y, 0.05);
            }
        }
        let (a, b) =
            (compare(&snap, &base, &Params::default()).unwrap(), compare(&snap, &base, &Params::default()).unwrap());
        assert_eq!((a.score, &a.regions, &a.heatmap_png), (b.score, &b.regions, &b.heatmap_png));
    }
}
