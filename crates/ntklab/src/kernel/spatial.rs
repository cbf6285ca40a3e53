//! Spatial layers' geometry in neural-tangents' (and XLA's) conventions: NHWC (or NWC) inputs, `VALID`, `SAME`
//! and `CIRCULAR` padding, strides, and the shapes they produce.
//!
//! Per spatial axis of length n with window k and stride s:
//! * `VALID`: out = floor((n - k) / s) + 1 (needs n >= k), no padding;
//! * `SAME`: out = ceil(n / s), zero padding of total max((out - 1) s + k - n, 0), the smaller half before
//!   (`lax.padtype_to_pads`);
//! * `CIRCULAR`: as `SAME`, but the padding wraps around (periodic images).

use std::fmt;

use crate::{Error, Result};

/// Padding of a convolution or pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// No padding; windows stay inside.
    Valid,
    /// Zero padding; output length ceil(n / stride).
    Same,
    /// Periodic padding; output length ceil(n / stride).
    Circular,
}

impl Padding {
    /// `valid`, `same` or `circular` (any case).
    pub fn parse(s: &str) -> Result<Padding> {
        match s.trim().to_ascii_lowercase().as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            "circular" => Ok(Padding::Circular),
            other => Err(Error::parse(other, "padding is valid, same or circular")),
        }
    }
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
            Padding::Circular => "circular",
        })
    }
}

/// The shape of one example at a node: spatial extents (empty for plain features) and channels. Values are
/// stored row-major, channels fastest (NHWC without the N).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Spatial extents, e.g. [H, W]; empty for a feature vector.
    pub spatial: Vec<usize>,
    /// Channels (features at each position).
    pub channels: usize,
}

impl Shape {
    /// A plain feature vector of length d.
    pub fn flat(d: usize) -> Shape {
        Shape { spatial: vec![], channels: d }
    }

    /// An image (or signal) with the given spatial extents and channels.
    pub fn image(spatial: &[usize], channels: usize) -> Shape {
        Shape { spatial: spatial.to_vec(), channels }
    }

    /// Number of spatial positions (1 for a feature vector).
    pub fn positions(&self) -> usize {
        self.spatial.iter().product()
    }

    /// Values per example.
    pub fn size(&self) -> usize {
        self.positions() * self.channels
    }

    /// Whether the shape has spatial axes.
    pub fn is_spatial(&self) -> bool {
        !self.spatial.is_empty()
    }

    /// Parse `HxWxC` (or `WxC`, `DxHxWxC`; spaces allowed around `x`): spatial extents then channels; a single
    /// number d is a feature vector.
    pub fn parse(s: &str) -> Result<Shape> {
        let v: Vec<usize> = s
            .split(['x', 'X'])
            .map(|p| p.trim().parse::<usize>().ok().filter(|&x| x > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::parse(s, "an input shape is positive integers like 16x16x3 (H x W x C), 32x3 (W x C) or 784")
            })?;
        if v.len() > 4 {
            return Err(Error::parse(s, "an input shape has at most 3 spatial axes and the channels"));
        }
        let (c, sp) = v.split_last().expect("split gives at least one part");
        Ok(Shape { spatial: sp.to_vec(), channels: *c })
    }

    /// The compact text [`Shape::parse`] reads back: `16x16x3`, or `784` for a feature vector.
    pub fn compact(&self) -> String {
        let mut parts: Vec<String> = self.spatial.iter().map(|s| s.to_string()).collect();
        parts.push(self.channels.to_string());
        parts.join("x")
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.spatial {
            write!(f, "{s} x ")?;
        }
        write!(f, "{}", self.channels)
    }
}

/// A window sliding over one spatial axis: output length and, for every output index and window offset, the
/// input index it reads (None for zero padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axis1 {
    /// Input length.
    pub n_in: usize,
    /// Output length.
    pub n_out: usize,
    /// Window length.
    pub k: usize,
    /// `index[o * k + j]`: the input read by output o at window offset j.
    pub index: Vec<Option<usize>>,
}

impl Axis1 {
    /// The geometry of a window `k` with stride `s` and `padding` over `n` positions.
    pub fn new(n: usize, k: usize, s: usize, padding: Padding) -> Result<Axis1> {
        if k == 0 || s == 0 {
            return Err(Error::Config("window and stride must be positive".into()));
        }
        let (n_out, lo) = match padding {
            Padding::Valid => {
                if n < k {
                    return Err(Error::Config(format!(
                        "a window of {k} does not fit in {n} positions with valid padding"
                    )));
                }
                ((n - k) / s + 1, 0)
            }
            Padding::Same | Padding::Circular => {
                let out = n.div_ceil(s);
                let total = ((out - 1) * s + k).saturating_sub(n);
                (out, total / 2)
            }
        };
        let mut index = Vec::with_capacity(n_out * k);
        for o in 0..n_out {
            for j in 0..k {
                let i = (o * s + j) as isize - lo as isize;
                index.push(if (0..n as isize).contains(&i) {
                    Some(i as usize)
                } else if padding == Padding::Circular {
                    Some(i.rem_euclid(n as isize) as usize)
                } else {
                    None
                });
            }
        }
        Ok(Axis1 { n_in: n, n_out, k, index })
    }
}

/// A window over all spatial axes: flat output positions, and for each output position and window offset the
/// flat input position (None: padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Output spatial extents.
    pub out: Vec<usize>,
    /// Window size (product of the window extents).
    pub size: usize,
    /// `taps[q * size + j]`: flat input position read by flat output position q at flat window offset j.
    pub taps: Vec<Option<usize>>,
}

impl Window {
    /// The window `k` (per axis) with strides `s` and `padding` over the spatial extents `n`.
    pub fn new(n: &[usize], k: &[usize], s: &[usize], padding: Padding) -> Result<Window> {
        if k.len() != n.len() || s.len() != n.len() {
            return Err(Error::Config(format!(
                "a {}-d window on {}-d positions (strides: {})",
                k.len(),
                n.len(),
                s.len()
            )));
        }
        let axes: Vec<Axis1> = (0..n.len()).map(|a| Axis1::new(n[a], k[a], s[a], padding)).collect::<Result<_>>()?;
        let out: Vec<usize> = axes.iter().map(|a| a.n_out).collect();
        let size: usize = k.iter().product();
        let n_out: usize = out.iter().product();
        let mut taps = Vec::with_capacity(n_out * size);
        let mut oidx = vec![0usize; n.len()];
        for _ in 0..n_out {
            let mut widx = vec![0usize; n.len()];
            for _ in 0..size {
                let mut flat = Some(0usize);
                for a in 0..n.len() {
                    flat = match (flat, axes[a].index[oidx[a] * k[a] + widx[a]]) {
                        (Some(f), Some(i)) => Some(f * n[a] + i),
                        _ => None,
                    };
                }
                taps.push(flat);
                odometer(&mut widx, k);
            }
            odometer(&mut oidx, &out);
        }
        Ok(Window { out, size, taps })
    }
}

/// Advance a row-major multi-index (last axis fastest).
fn odometer(idx: &mut [usize], ext: &[usize]) {
    for a in (0..idx.len()).rev() {
        idx[a] += 1;
        if idx[a] < ext[a] {
            return;
        }
        idx[a] = 0;
    }
}

/// Parse `3x3`, `3` (1-d) or `2x3x1`: positive extents.
pub fn parse_extents(s: &str, what: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(['x', 'X', '*'])
        .map(|p| p.trim().parse::<usize>().ok().filter(|&x| x > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::parse(s, format!("{what} is positive integers like 3x3 (2-d) or 5 (1-d)")))?;
    if v.is_empty() || v.len() > 3 {
        return Err(Error::parse(s, format!("{what} has 1 to 3 spatial axes")));
    }
    Ok(v)
}

/// Show extents as `3x3`.
pub fn show_extents(v: &[usize]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_follows_xla() {
        // SAME, n = 5, k = 3, s = 2: out 3, total pad (3-1)*2+3-5 = 2, one each side.
        let a = Axis1::new(5, 3, 2, Padding::Same).unwrap();
        assert_eq!(a.n_out, 3);
        assert_eq!(&a.index[..3], &[None, Some(0), Some(1)]);
        assert_eq!(&a.index[6..], &[Some(3), Some(4), None]);
        // k = 4, s = 1, n = 5: total 3, lo 1, hi 2.
        let b = Axis1::new(5, 4, 1, Padding::Same).unwrap();
        assert_eq!(b.n_out, 5);
        assert_eq!(&b.index[..4], &[None, Some(0), Some(1), Some(2)]);
        assert_eq!(&b.index[16..], &[Some(3), Some(4), None, None]);
        let c = Axis1::new(5, 4, 1, Padding::Circular).unwrap();
        assert_eq!(&c.index[16..], &[Some(3), Some(4), Some(0), Some(1)]);
        let v = Axis1::new(7, 3, 2, Padding::Valid).unwrap();
        assert_eq!(v.n_out, 3);
        assert!(Axis1::new(2, 3, 1, Padding::Valid).is_err());
        let w = Window::new(&[3, 4], &[2, 2], &[1, 2], Padding::Valid).unwrap();
        assert_eq!(w.out, vec![2, 2]);
        // Output (1, 1) reads rows 1..3, columns 2..4: flat 6, 7, 10, 11.
        assert_eq!(&w.taps[3 * 4..], &[Some(6), Some(7), Some(10), Some(11)]);
        assert_eq!(parse_extents("3x3", "filter").unwrap(), vec![3, 3]);
        assert!(parse_extents("0x3", "filter").is_err() && parse_extents("a", "filter").is_err());
    }
}
