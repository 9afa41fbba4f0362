//! `switchboard cv-compare`: one snapshot against its baseline, from files or a synthetic
//! 1280×720-style pair, printed as JSON; with `--repeat N`, decode and compare are timed N
//! times on this thread (one core) and their percentiles printed: the CV step's figure in
//! `docs/benchmarks.md`.

use crate::cv::gray::{Gray, ImageLimits};
use crate::cv::{self, Params};
use anyhow::{Context, Result, anyhow};
use serde_json::json;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

/// What to compare.
#[derive(Debug)]
pub struct CompareOptions {
    /// Snapshot file (PNG or JPEG).
    pub snapshot: Option<PathBuf>,
    /// Baseline file.
    pub baseline: Option<PathBuf>,
    /// `WxH`: a generated pair instead of files (a textured scene, and the same with a box).
    pub synthetic: Option<String>,
    /// Where to write the heatmap PNG.
    pub heatmap: Option<PathBuf>,
    /// Timed repetitions.
    pub repeat: u32,
}

/// A textured scene of `w`×`h` as PNG bytes, with a dark box drawn when `with_box`.
pub fn synthetic_png(w: u32, h: u32, with_box: bool) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let inside = with_box && (w / 2..w / 2 + w / 8).contains(&x) && (h / 4..h / 4 + h / 6).contains(&y);
        if inside {
            return image::Rgb([20, 20, 30]);
        }
        let grid = if (x / 24 + y / 24) % 2 == 0 { 40 } else { 0 };
        let r = (60 + (x * 120 / w) + grid).min(255) as u8;
        let g = (80 + (y * 100 / h) + grid / 2).min(255) as u8;
        let b = (100 + ((x + y) % 64)).min(255) as u8;
        image::Rgb([r, g, b])
    });
    let mut out = Cursor::new(Vec::new());
    // Encoding a generated image in memory cannot fail.
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the comparison and prints it.
pub fn run(o: CompareOptions) -> Result<()> {
    let (snap_bytes, base_bytes) = match (&o.synthetic, &o.snapshot, &o.baseline) {
        (Some(size), _, _) => {
            let (w, h) = size.split_once('x').ok_or_else(|| anyhow!("--synthetic WxH, e.g. 1280x720"))?;
            let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
            (synthetic_png(w, h, true), synthetic_png(w, h, false))
        }
        (None, Some(s), Some(b)) => (
            std::fs::read(s).with_context(|| format!("reading {}", s.display()))?,
            std::fs::read(b).with_context(|| format!("reading {}", b.display()))?,
        ),
        _ => return Err(anyhow!("give SNAPSHOT and BASELINE files, or --synthetic WxH")),
    };
    let limits = ImageLimits::default();
    let params = Params::default();
    let decode = |bytes: &[u8]| Gray::decode(bytes, &limits).map_err(|e| anyhow!("{} ({})", e, e.code()));
    let (snap, base) = (decode(&snap_bytes)?, decode(&base_bytes)?);
    let result = cv::compare(&snap, &base, &params).map_err(|e| anyhow!("{e}"))?;
    if let Some(path) = &o.heatmap {
        std::fs::write(path, &result.heatmap_png).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = json!({
        "score": result.score,
        "verdict": result.verdict,
        "regions": result.regions,
        "brightnessDelta": result.brightness_delta,
        "snapshot": {"width": snap.width, "height": snap.height},
        "baseline": {"width": base.width, "height": base.height},
        "algorithm": result.algorithm,
    });
    if o.repeat > 0 {
        let (mut decode_ms, mut compare_ms) = (Vec::new(), Vec::new());
        for _ in 0..o.repeat {
            let t = Instant::now();
            let (s, b) = (decode(&snap_bytes)?, decode(&base_bytes)?);
            decode_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let _ = cv::compare(&s, &b, &params).map_err(|e| anyhow!("{e}"))?;
            compare_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        decode_ms.sort_by(f64::total_cmp);
        compare_ms.sort_by(f64::total_cmp);
        out["timing"] = json!({
            "repeat": o.repeat,
            "decodePairMs": {"p50": percentile(&decode_ms, 50.0), "p99": percentile(&decode_ms, 99.0)},
            "compareMs": {"p50": percentile(&compare_ms, 50.0), "p99": percentile(&compare_ms, 99.0)},
        });
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
