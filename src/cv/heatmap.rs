//! The heatmap: dissimilarity drawn as a PNG, dark blue (unchanged) through red to yellow
//! (most changed), one pixel per SSIM window position.

use super::CvError;
use image::{ImageFormat, Rgb, RgbImage};
use std::io::Cursor;

/// The colour of a dissimilarity in 0..1.
pub fn colour(d: f32) -> [u8; 3] {
    let d = d.clamp(0.0, 1.0);
    // Three stops: (0, 0, 64) → (255, 0, 0) at 0.5 → (255, 255, 0) at 1.
    let (r, g, b) = if d < 0.5 {
        let t = d / 0.5;
        (255.0 * t, 0.0, 64.0 * (1.0 - t))
    } else {
        let t = (d - 0.5) / 0.5;
        (255.0, 255.0 * t, 0.0)
    };
    [r.round() as u8, g.round() as u8, b.round() as u8]
}

/// Renders `dissimilarity` (`width`×`height`) as a PNG. Dissimilarity is stretched ×4 so that
/// what the verdict notices is visible (0.25 and more is yellow).
pub fn render(dissimilarity: &[f32], width: usize, height: usize) -> Result<Vec<u8>, CvError> {
    let (w, h) = (width.max(1) as u32, height.max(1) as u32);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let d = dissimilarity.get(y as usize * width + x as usize).copied().unwrap_or(0.0);
        Rgb(colour(d * 4.0))
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).map_err(|e| CvError::Corrupt(format!("heatmap: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_run_from_blue_to_yellow_and_the_png_decodes() {
        assert_eq!(colour(0.0), [0, 0, 64]);
        assert_eq!(colour(0.5), [255, 0, 0]);
        assert_eq!(colour(1.0), [255, 255, 0]);
        let png = render(&[0.0, 0.25, 0.1, 0.0], 2, 2).unwrap();
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (2, 2));
        assert_eq!(back.get_pixel(1, 0).0, [255, 255, 0]);
    }
}
