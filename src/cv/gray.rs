//! Grey images as the analysis sees them: luma in 0..1 as `f32`, row-major. Decoding checks
//! the format (PNG or JPEG only) and the limits before anything large is allocated.

use super::CvError;
use image::{ImageFormat, ImageReader};
use std::io::Cursor;

/// A grey image.
#[derive(Clone, Debug, PartialEq)]
pub struct Gray {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Luma, 0 (black) to 1 (white), row after row.
    pub pixels: Vec<f32>,
}

/// What an image may be.
#[derive(Clone, Copy, Debug)]
pub struct ImageLimits {
    /// Largest encoded size, bytes.
    pub max_bytes: usize,
    /// Largest width or height, pixels.
    pub max_side: u32,
    /// Most pixels.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_bytes: 10 * 1024 * 1024, max_side: 8192, max_pixels: 16_777_216 }
    }
}

impl Gray {
    /// An image of one value.
    pub fn filled(width: usize, height: usize, value: f32) -> Gray {
        Gray { width, height, pixels: vec![value; width * height] }
    }

    /// The pixel at (x, y).
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.pixels[y * self.width + x]
    }

    /// Sets the pixel at (x, y).
    pub fn set(&mut self, x: usize, y: usize, v: f32) {
        self.pixels[y * self.width + x] = v;
    }

    /// Mean luma.
    pub fn mean(&self) -> f64 {
        if self.pixels.is_empty() {
            return 0.0;
        }
        self.pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / self.pixels.len() as f64
    }

    /// Decodes a PNG or JPEG to luma (ITU-R BT.601 weights, as `image` converts).
    pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Gray, CvError> {
        if bytes.len() > limits.max_bytes {
            return Err(CvError::TooLarge(format!("{} bytes; at most {}", bytes.len(), limits.max_bytes)));
        }
        let format = image::guess_format(bytes).map_err(|_| CvError::Format("not a PNG or JPEG image".into()))?;
        if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
            return Err(CvError::Format(format!("{format:?} images are not accepted; send PNG or JPEG")));
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| CvError::Corrupt(e.to_string()))?;
        if w == 0 || h == 0 || w > limits.max_side || h > limits.max_side {
            return Err(CvError::TooLarge(format!("{w}×{h} pixels; at most {} on a side", limits.max_side)));
        }
        if u64::from(w) * u64::from(h) > limits.max_pixels {
            return Err(CvError::TooLarge(format!("{w}×{h} pixels; at most {} in all", limits.max_pixels)));
        }
        let mut l = image::Limits::default();
        l.max_image_width = Some(limits.max_side);
        l.max_image_height = Some(limits.max_side);
        l.max_alloc = Some(limits.max_pixels * 8);
        reader.limits(l);
        let decoded = reader.decode().map_err(|e| CvError::Corrupt(e.to_string()))?;
        let luma = decoded.to_luma8();
        let (width, height) = (luma.width() as usize, luma.height() as usize);
        let pixels = luma.into_raw().into_iter().map(|v| f32::from(v) / 255.0).collect();
        Ok(Gray { width, height, pixels })
    }

    /// Resampled to `width`×`height` (bilinear): a snapshot is compared at its baseline's size.
    pub fn resized(&self, width: usize, height: usize) -> Gray {
        if width == self.width && height == self.height {
            return self.clone();
        }
        let mut out = Gray::filled(width, height, 0.0);
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        for y in 0..height {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (self.height - 1) as f32);
            let (y0, ty) = (fy.floor() as usize, fy.fract());
            let y1 = (y0 + 1).min(self.height - 1);
            for x in 0..width {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (self.width - 1) as f32);
                let (x0, tx) = (fx.floor() as usize, fx.fract());
                let x1 = (x0 + 1).min(self.width - 1);
                let top = self.at(x0, y0) * (1.0 - tx) + self.at(x1, y0) * tx;
                let bottom = self.at(x0, y1) * (1.0 - tx) + self.at(x1, y1) * tx;
                out.set(x, y, top * (1.0 - ty) + bottom * ty);
            }
        }
        out
    }

    /// Averaged over `f`×`f` blocks and subsampled by `f`, as Wang's reference implementation
    /// does before SSIM (it keeps the window's scale in proportion to the image).
    pub fn downsampled(&self, f: usize) -> Gray {
        if f <= 1 {
            return self.clone();
        }
        let (width, height) = (self.width / f, self.height / f);
        let mut out = Gray::filled(width.max(1), height.max(1), 0.0);
        let norm = 1.0 / (f * f) as f32;
        for y in 0..out.height {
            for x in 0..out.width {
                let mut sum = 0.0;
                for dy in 0..f {
                    for dx in 0..f {
                        sum += self.at((x * f + dx).min(self.width - 1), (y * f + dy).min(self.height - 1));
                    }
                }
                out.set(x, y, sum * norm);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_png_and_refuses_what_it_must() {
        let g = Gray::decode(&png(4, 2, |x, _| (x * 85) as u8), &ImageLimits::default()).unwrap();
        assert_eq!((g.width, g.height), (4, 2));
        assert!((g.at(3, 0) - 1.0).abs() < 1e-6 && g.at(0, 1) == 0.0);
        assert!(matches!(Gray::decode(b"GIF89a....", &ImageLimits::default()), Err(CvError::Format(_))));
        assert!(matches!(Gray::decode(b"not an image", &ImageLimits::default()), Err(CvError::Format(_))));
        let mut truncated = png(64, 64, |x, y| (x ^ y) as u8);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(Gray::decode(&truncated, &ImageLimits::default()), Err(CvError::Corrupt(_))));
        let small = ImageLimits { max_side: 16, ..ImageLimits::default() };
        assert!(matches!(Gray::decode(&png(32, 8, |_, _| 0), &small), Err(CvError::TooLarge(_))));
        let tiny = ImageLimits { max_bytes: 10, ..ImageLimits::default() };
        assert!(matches!(Gray::decode(&png(8, 8, |_, _| 0), &tiny), Err(CvError::TooLarge(_))));
    }

    #[test]
    fn resizing_and_downsampling_keep_the_picture() {
        let mut g = Gray::filled(8, 8, 0.0);
        for y in 0..8 {
            for x in 4..8 {
                g.set(x, y, 1.0);
            }
        }
        let d = g.downsampled(2);
        assert_eq!((d.width, d.height), (4, 4));
        assert_eq!((d.at(0, 0), d.at(3, 3)), (0.0, 1.0));
        let r = g.resized(16, 16);
        assert_eq!((r.width, r.height), (16, 16));
        assert!(r.at(0, 0) < 0.01 && r.at(15, 15) > 0.99);
        assert!((r.mean() - g.mean()).abs() < 0.05);
    }
}
