//! Alignment by phase correlation: how far the snapshot's content moved against the baseline
//! (a camera nudged between two snapshots), found as the peak of the inverse Fourier transform
//! of the two images' normalised cross-power spectrum (Kuglin and Hines, "The phase
//! correlation image alignment method", 1975). Both images lose their mean and get a Hann
//! window, are zero-padded to powers of two and transformed with a radix-2 FFT. The shift is
//! whole cells of the image it is given (the downsampled luma); only shifts within `max_shift`
//! of each side are looked at, and a peak below `min_peak` (or below what chance gives at
//! that transform size, 10/√points) is no alignment.

use super::gray::Gray;
use serde::{Deserialize, Serialize};

/// The shift found: the snapshot's content sits `(dx, dy)` cells right of and below the
/// baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shift {
    /// Cells to the right.
    pub dx: i32,
    /// Cells down.
    pub dy: i32,
    /// The correlation peak, 0..1 (1: the same content, only moved).
    pub peak: f64,
}

/// Largest padded transform, in points (2^20: a 1024×1024 map).
const MAX_POINTS: usize = 1 << 20;

/// The shift of `snapshot` against `baseline` (same size), if one is found with a peak of at
/// least `min_peak` and at most `max_shift` (a fraction of each side) in each direction.
pub fn phase_shift(snapshot: &Gray, baseline: &Gray, min_peak: f64, max_shift: f64) -> Option<Shift> {
    let (w, h) = (baseline.width, baseline.height);
    if snapshot.width != w || snapshot.height != h || w < 2 || h < 2 {
        return None;
    }
    let (pw, ph) = (w.next_power_of_two(), h.next_power_of_two());
    if pw * ph > MAX_POINTS {
        return None;
    }
    let mut a = windowed(snapshot, pw, ph);
    let mut b = windowed(baseline, pw, ph);
    fft2(&mut a, pw, ph, false);
    fft2(&mut b, pw, ph, false);
    // The normalised cross-power spectrum: only the phase difference is left. Bins with
    // almost no energy are damped rather than raised to full weight (they are mostly noise).
    let mut cross: Vec<Complex> = a.iter().zip(&b).map(|(x, y)| x.mul(y.conj())).collect();
    let floor = EPSILON * cross.iter().map(|p| p.abs()).sum::<f64>() / cross.len() as f64;
    let mut total = 0.0;
    for p in &mut cross {
        *p = p.scale(1.0 / (p.abs() + floor));
        total += p.abs();
    }
    fft2(&mut cross, pw, ph, true);
    // The best peak among the shifts looked for (a repeating pattern has peaks further out).
    let (mx, my) = ((max_shift * w as f64) as i64, (max_shift * h as f64) as i64);
    let at = |d: i64, size: usize| d.rem_euclid(size as i64) as usize;
    let mut best = (f64::MIN, 0, 0);
    for dy in -my..=my {
        for dx in -mx..=mx {
            let v = cross[at(dy, ph) * pw + at(dx, pw)].re;
            if v > best.0 {
                best = (v, dx, dy);
            }
        }
    }
    // A pure shift puts all the weight in one peak.
    let peak = if total > 0.0 { (best.0 / total).clamp(0.0, 1.0) } else { 0.0 };
    // Chance peaks between unrelated images grow as the transform shrinks.
    let chance = 10.0 / ((pw * ph) as f64).sqrt();
    (peak >= min_peak.max(chance)).then_some(Shift { dx: best.1 as i32, dy: best.2 as i32, peak })
}

/// The damping of low-energy bins, as a fraction of the mean cross-power magnitude.
const EPSILON: f64 = 1e-6;

/// `snapshot` moved back by `shift`, so that it lies over `baseline`; cells it does not cover
/// take the baseline's value (they carry no evidence of change).
pub fn undo_shift(snapshot: &Gray, baseline: &Gray, shift: Shift) -> Gray {
    let (w, h) = (baseline.width, baseline.height);
    let mut out = baseline.clone();
    for y in 0..h {
        let sy = y as i64 + i64::from(shift.dy);
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..w {
            let sx = x as i64 + i64::from(shift.dx);
            if sx >= 0 && sx < w as i64 {
                out.set(x, y, snapshot.at(sx as usize, sy as usize));
            }
        }
    }
    out
}

/// `g` without its mean, under a Hann window, zero-padded to `pw × ph`.
fn windowed(g: &Gray, pw: usize, ph: usize) -> Vec<Complex> {
    let mean = g.mean() as f32;
    let hann = |i: usize, n: usize| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
    let wx: Vec<f64> = (0..g.width).map(|x| hann(x, g.width)).collect();
    let mut out = vec![Complex::ZERO; pw * ph];
    for y in 0..g.height {
        let wy = hann(y, g.height);
        for x in 0..g.width {
            out[y * pw + x].re = f64::from(g.at(x, y) - mean) * wx[x] * wy;
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    const ZERO: Complex = Complex { re: 0.0, im: 0.0 };

    fn mul(self, o: Complex) -> Complex {
        Complex { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }

    fn conj(self) -> Complex {
        Complex { re: self.re, im: -self.im }
    }

    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }

    fn scale(self, k: f64) -> Complex {
        Complex { re: self.re * k, im: self.im * k }
    }

    fn add(self, o: Complex) -> Complex {
        Complex { re: self.re + o.re, im: self.im + o.im }
    }

    fn sub(self, o: Complex) -> Complex {
        Complex { re: self.re - o.re, im: self.im - o.im }
    }
}

/// In-place 2-D FFT of a row-major `w × h` grid (both powers of two); `inverse` leaves the
/// result unscaled.
fn fft2(data: &mut [Complex], w: usize, h: usize, inverse: bool) {
    for row in data.chunks_exact_mut(w) {
        fft(row, inverse);
    }
    let mut column = vec![Complex::ZERO; h];
    for x in 0..w {
        for (y, c) in column.iter_mut().enumerate() {
            *c = data[y * w + x];
        }
        fft(&mut column, inverse);
        for (y, c) in column.iter().enumerate() {
            data[y * w + x] = *c;
        }
    }
}

/// In-place iterative radix-2 FFT (Cooley–Tukey); `a.len()` is a power of two.
fn fft(a: &mut [Complex], inverse: bool) {
    let n = a.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            a.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let angle = sign * 2.0 * std::f64::consts::PI / len as f64;
        let step = Complex { re: angle.cos(), im: angle.sin() };
        for start in (0..n).step_by(len) {
            let mut twiddle = Complex { re: 1.0, im: 0.0 };
            for k in 0..len / 2 {
                let u = a[start + k];
                let v = a[start + k + len / 2].mul(twiddle);
                a[start + k] = u.add(v);
                a[start + k + len / 2] = u.sub(v);
                twiddle = twiddle.mul(step);
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random texture (fine grain over coarse blotches), like a photographed scene,
    /// seen at (x − dx, y − dy): its content moved right by dx and down by dy.
    fn texture(w: usize, h: usize, dx: i64, dy: i64) -> Gray {
        let hash = |x: i64, y: i64| {
            let mut v = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) as u64;
            v ^= v >> 13;
            v = v.wrapping_mul(0x5bd1_e995);
            v ^= v >> 15;
            (v % 1000) as f32 / 1000.0
        };
        let mut g = Gray::filled(w, h, 0.0);
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as i64 - dx, y as i64 - dy);
                let value = 0.3 * hash(u, v) + 0.5 * hash(u.div_euclid(8), v.div_euclid(8)) + 0.1;
                g.set(x, y, value);
            }
        }
        g
    }

    #[test]
    fn the_fft_inverts() {
        let mut a: Vec<Complex> = (0..16).map(|i| Complex { re: f64::from(i), im: 0.0 }).collect();
        let original = a.clone();
        fft(&mut a, false);
        assert!((a[0].re - 120.0).abs() < 1e-9, "DC is the sum");
        fft(&mut a, true);
        for (x, y) in a.iter().zip(&original) {
            assert!((x.re / 16.0 - y.re).abs() < 1e-9 && (x.im / 16.0).abs() < 1e-9);
        }
    }

    #[test]
    fn a_moved_scene_is_found_and_moved_back() {
        let base = texture(200, 120, 0, 0);
        let moved = texture(200, 120, 7, -4);
        let shift = phase_shift(&moved, &base, 0.05, 0.2).expect("a shift");
        assert_eq!((shift.dx, shift.dy), (7, -4), "{shift:?}");
        assert!(shift.peak > 0.2, "{shift:?}");
        let back = undo_shift(&moved, &base, shift);
        // Inside the overlap the scene is the baseline again.
        for (x, y) in [(50, 50), (100, 30), (150, 90)] {
            assert!((back.at(x, y) - base.at(x, y)).abs() < 1e-6);
        }
    }

    #[test]
    fn the_same_scene_has_no_shift() {
        let base = texture(128, 96, 0, 0);
        let shift = phase_shift(&base, &base, 0.05, 0.2).expect("a shift");
        assert_eq!((shift.dx, shift.dy), (0, 0));
        assert!(shift.peak > 0.5, "{shift:?}");
    }

    #[test]
    fn unrelated_scenes_have_a_low_peak() {
        let (a, b) = (texture(256, 160, 0, 0), texture(256, 160, 5000, 3000));
        // Their best peak (0.03) is below what chance gives at this size (10/256).
        assert!(phase_shift(&a, &b, 0.0, 0.15).is_none());
    }

    #[test]
    fn a_shift_beyond_the_limit_is_no_alignment() {
        let base = texture(200, 120, 0, 0);
        let moved = texture(200, 120, 40, 0);
        assert!(phase_shift(&moved, &base, 0.05, 0.1).is_none());
    }
}
