//! SSIM as Wang, Bovik, Sheikh and Simoncelli define it (IEEE TIP 13(4), 2004): local means,
//! variances and covariance under an 11×11 circular-symmetric Gaussian window (σ = 1.5,
//! normalised to sum 1), constants C1 = (K1·L)² and C2 = (K2·L)² with K1 = 0.01, K2 = 0.03 and
//! L = 1 (luma in 0..1), computed where the window fits inside the image ("valid", as in the
//! authors' reference code), so the map is (W−10)×(H−10).

use super::gray::Gray;

/// Side of the window.
pub const WINDOW: usize = 11;
/// The Gaussian's standard deviation.
pub const SIGMA: f32 = 1.5;
/// Stabilising constants.
pub const K1: f32 = 0.01;
/// See [`K1`].
pub const K2: f32 = 0.03;

/// SSIM's local maps.
#[derive(Clone, Debug)]
pub struct SsimMaps {
    /// Map width (the image's minus `WINDOW - 1`).
    pub width: usize,
    /// Map height.
    pub height: usize,
    /// SSIM per window position, −1..1.
    pub ssim: Vec<f32>,
    /// Its contrast-structure part alone (no luminance term): high when only brightness
    /// changed.
    pub cs: Vec<f32>,
}

impl SsimMaps {
    /// Mean SSIM (the paper's MSSIM).
    pub fn mean(&self) -> f64 {
        mean(&self.ssim)
    }

    /// Mean of the contrast-structure map.
    pub fn mean_cs(&self) -> f64 {
        mean(&self.cs)
    }
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        return 1.0;
    }
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
}

/// The normalised 1-D Gaussian whose outer product is the window.
pub fn kernel() -> [f32; WINDOW] {
    let mut k = [0.0f32; WINDOW];
    let c = (WINDOW / 2) as f32;
    for (i, v) in k.iter_mut().enumerate() {
        let d = i as f32 - c;
        *v = (-(d * d) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Separable "valid" filtering of `src` (`w`×`h`) with `k` in both directions.
fn blur(src: &[f32], w: usize, h: usize, k: &[f32; WINDOW]) -> Vec<f32> {
    let (ow, oh) = (w + 1 - WINDOW, h + 1 - WINDOW);
    let mut rows = vec![0.0f32; ow * h];
    for y in 0..h {
        let line = &src[y * w..(y + 1) * w];
        let out = &mut rows[y * ow..(y + 1) * ow];
        for (x, o) in out.iter_mut().enumerate() {
            *o = line[x..x + WINDOW].iter().zip(k).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![0.0f32; ow * oh];
    for y in 0..oh {
        for (i, kv) in k.iter().enumerate() {
            let line = &rows[(y + i) * ow..(y + i + 1) * ow];
            let o = &mut out[y * ow..(y + 1) * ow];
            for (a, b) in o.iter_mut().zip(line) {
                *a += kv * b;
            }
        }
    }
    out
}

/// The SSIM maps of two images of one size (at least `WINDOW` on each side).
pub fn ssim(x: &Gray, y: &Gray) -> SsimMaps {
    assert_eq!((x.width, x.height), (y.width, y.height), "SSIM compares images of one size");
    let (w, h) = (x.width, x.height);
    if w < WINDOW || h < WINDOW {
        return SsimMaps { width: 0, height: 0, ssim: Vec::new(), cs: Vec::new() };
    }
    let k = kernel();
    let (c1, c2) = ((K1 * 1.0).powi(2), (K2 * 1.0).powi(2));
    let product =
        |f: &dyn Fn(f32, f32) -> f32| -> Vec<f32> { x.pixels.iter().zip(&y.pixels).map(|(&a, &b)| f(a, b)).collect() };
    let mu_x = blur(&x.pixels, w, h, &k);
    let mu_y = blur(&y.pixels, w, h, &k);
    let xx = blur(&product(&|a, _| a * a), w, h, &k);
    let yy = blur(&product(&|_, b| b * b), w, h, &k);
    let xy = blur(&product(&|a, b| a * b), w, h, &k);
    let n = mu_x.len();
    let mut ssim = Vec::with_capacity(n);
    let mut cs = Vec::with_capacity(n);
    for i in 0..n {
        let (mx, my) = (mu_x[i], mu_y[i]);
        let sx = (xx[i] - mx * mx).max(0.0);
        let sy = (yy[i] - my * my).max(0.0);
        let sxy = xy[i] - mx * my;
        let contrast_structure = (2.0 * sxy + c2) / (sx + sy + c2);
        let luminance = (2.0 * mx * my + c1) / (mx * mx + my * my + c1);
        ssim.push(luminance * contrast_structure);
        cs.push(contrast_structure);
    }
    SsimMaps { width: w + 1 - WINDOW, height: h + 1 - WINDOW, ssim, cs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: usize, h: usize, seed: u32) -> Gray {
        let mut state = seed;
        let mut g = Gray::filled(w, h, 0.0);
        for p in &mut g.pixels {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *p = (state >> 8) as f32 / (1u32 << 24) as f32;
        }
        g
    }

    #[test]
    fn the_window_is_normalised_and_symmetric() {
        let k = kernel();
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((k[0] - k[10]).abs() < 1e-9 && k[5] > k[4]);
        // σ = 1.5: the centre weight of the 1-D kernel is 1 / Σ exp(−d²/4.5).
        assert!((k[5] - 0.266_011).abs() < 1e-4, "{}", k[5]);
    }

    #[test]
    fn identical_images_score_one_and_noise_scores_low() {
        let a = noise(40, 30, 7);
        let same = ssim(&a, &a);
        assert_eq!((same.width, same.height), (30, 20));
        assert!((same.mean() - 1.0).abs() < 1e-6);
        let other = ssim(&a, &noise(40, 30, 8));
        assert!(other.mean() < 0.2, "{}", other.mean());
    }

    #[test]
    fn a_brightness_shift_keeps_structure() {
        let a = noise(40, 30, 3);
        let mut brighter = a.clone();
        brighter.pixels.iter_mut().for_each(|p| *p = (*p * 0.5 + 0.45).min(1.0));
        let mut dimmer = a.clone();
        dimmer.pixels.iter_mut().for_each(|p| *p *= 0.5);
        let m = ssim(&brighter, &dimmer);
        assert!(m.mean_cs() > 0.95, "structure kept: {}", m.mean_cs());
        assert!(m.mean() < m.mean_cs(), "luminance lowers SSIM: {} vs {}", m.mean(), m.mean_cs());
    }
}
