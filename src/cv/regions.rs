//! Changed regions: the SSIM map's dissimilarity `(1 − SSIM) / 2` thresholded, cleaned by a
//! morphological opening (drops specks) then a closing (joins what a thin seam split), and cut
//! into 8-connected components, each a box with its area and mean dissimilarity.

/// A changed region, in the map's coordinates until [`Region::scaled`] moves it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Pixels in the component.
    pub area: u32,
    /// Mean dissimilarity over the component, 0..1.
    pub score: f64,
}

impl Region {
    /// From map coordinates to an image's: each map position is the window centred `offset`
    /// further on, in an image `factor` times smaller than the one reported on, stretched by
    /// `sx`, `sy` to it.
    pub fn scaled(&self, offset: u32, factor: f64, sx: f64, sy: f64, max_w: u32, max_h: u32) -> Region {
        let fx = factor * sx;
        let fy = factor * sy;
        let x = ((f64::from(self.x + offset)) * fx).floor().min(f64::from(max_w.saturating_sub(1))) as u32;
        let y = ((f64::from(self.y + offset)) * fy).floor().min(f64::from(max_h.saturating_sub(1))) as u32;
        let width = ((f64::from(self.width) * fx).ceil() as u32).clamp(1, max_w - x);
        let height = ((f64::from(self.height) * fy).ceil() as u32).clamp(1, max_h - y);
        let area = ((f64::from(self.area) * fx * fy).round() as u32).max(1);
        Region { x, y, width, height, area, score: self.score }
    }
}

/// A binary mask.
#[derive(Clone, Debug)]
pub struct Mask {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Row-major cells.
    pub cells: Vec<bool>,
}

impl Mask {
    fn get(&self, x: isize, y: isize) -> Option<bool> {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return None;
        }
        Some(self.cells[y as usize * self.width + x as usize])
    }

    /// 3×3 erosion (`all`) or dilation (`any`); outside counts as the neutral value.
    fn morph(&self, dilate: bool) -> Mask {
        let mut cells = vec![false; self.cells.len()];
        for y in 0..self.height as isize {
            for x in 0..self.width as isize {
                let mut hit = !dilate;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let v = self.get(x + dx, y + dy).unwrap_or(!dilate);
                        if dilate { hit |= v } else { hit &= v }
                    }
                }
                cells[y as usize * self.width + x as usize] = hit;
            }
        }
        Mask { width: self.width, height: self.height, cells }
    }

    /// Opening then closing.
    pub fn cleaned(&self) -> Mask {
        self.morph(false).morph(true).morph(true).morph(false)
    }
}

/// The mask of `dissimilarity ≥ threshold`.
pub fn threshold(dissimilarity: &[f32], width: usize, height: usize, threshold: f32) -> Mask {
    Mask { width, height, cells: dissimilarity.iter().map(|&d| d >= threshold).collect() }
}

/// The 8-connected components of `mask` with at least `min_area` cells, largest first.
pub fn components(mask: &Mask, dissimilarity: &[f32], min_area: u32) -> Vec<Region> {
    let mut seen = vec![false; mask.cells.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.cells.len() {
        if !mask.cells[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let (mut area, mut sum) = (0u32, 0.0f64);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % mask.width, i / mask.width);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            area += 1;
            sum += f64::from(dissimilarity[i]);
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if mask.get(nx, ny) == Some(true) {
                        let j = ny as usize * mask.width + nx as usize;
                        if !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
        }
        if area >= min_area {
            out.push(Region {
                x: x0 as u32,
                y: y0 as u32,
                width: (x1 - x0 + 1) as u32,
                height: (y1 - y0 + 1) as u32,
                area,
                score: sum / f64::from(area),
            });
        }
    }
    out.sort_by(|a, b| b.area.cmp(&a.area).then(a.y.cmp(&b.y)).then(a.x.cmp(&b.x)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_found_and_specks_cleaned() {
        let (w, h) = (20, 10);
        let mut d = vec![0.0f32; w * h];
        for y in 2..6 {
            for x in 3..9 {
                d[y * w + x] = 0.8;
            }
        }
        d[8 * w + 15] = 0.9; // a one-pixel speck
        let mask = threshold(&d, w, h, 0.5).cleaned();
        let regions = components(&mask, &d, 4);
        assert_eq!(regions.len(), 1, "{regions:?}");
        let r = &regions[0];
        assert_eq!((r.x, r.y, r.width, r.height, r.area), (3, 2, 6, 4, 24));
        assert!((r.score - 0.8).abs() < 1e-6);
        let s = r.scaled(5, 2.0, 1.0, 1.0, 100, 100);
        assert_eq!((s.x, s.y, s.width, s.height, s.area), (16, 14, 12, 8, 96));
    }
}
