//! Overlays: what a participant draws over the shared video (a pointer, a measurement), and
//! the limits that keep them small.

use super::*;

/// Most points in a `measure` overlay.
pub const MAX_OVERLAY_POINTS: usize = 32;

/// Longest label or color string in an overlay.
pub const MAX_OVERLAY_LABEL: usize = 64;

/// A point in normalized video coordinates (0..=1 on both axes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal, 0 = left edge.
    pub x: f64,
    /// Vertical, 0 = top edge.
    pub y: f64,
}

/// An overlay: typed, validated, size-capped. The latest one per peer is kept for late joiners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Overlay {
    /// A pointer at one spot.
    Pointer {
        /// Where.
        x: f64,
        /// Where.
        y: f64,
        /// CSS color, optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<String>,
    },
    /// A measurement: a polyline with an optional label.
    Measure {
        /// The points.
        points: Vec<Point>,
        /// Text shown with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// Removes this peer's overlay.
    Clear,
}

impl Overlay {
    /// Checks coordinates and sizes; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let coord = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        let text = |s: &Option<String>| s.as_ref().is_none_or(|s| s.chars().count() <= MAX_OVERLAY_LABEL);
        match self {
            Overlay::Pointer { x, y, color } => {
                if !coord(*x) || !coord(*y) {
                    return Err("pointer coordinates must be between 0 and 1".into());
                }
                if !text(color) {
                    return Err(format!("color is longer than {MAX_OVERLAY_LABEL} characters"));
                }
            }
            Overlay::Measure { points, label } => {
                if points.is_empty() || points.len() > MAX_OVERLAY_POINTS {
                    return Err(format!("a measure has 1 to {MAX_OVERLAY_POINTS} points"));
                }
                if !points.iter().all(|p| coord(p.x) && coord(p.y)) {
                    return Err("measure coordinates must be between 0 and 1".into());
                }
                if !text(label) {
                    return Err(format!("label is longer than {MAX_OVERLAY_LABEL} characters"));
                }
            }
            Overlay::Clear => {}
        }
        Ok(())
    }
}
