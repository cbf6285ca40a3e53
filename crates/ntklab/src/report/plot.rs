//! Line plots written as SVG and PNG (plotters with a bundled DejaVu Sans font), atomically.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One named curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label (empty: drawn without a legend entry, e.g. one of many paths).
    pub name: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Draw markers instead of a line.
    pub markers: bool,
}

impl Series {
    /// A line series.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, markers: false }
    }
    /// A marker series.
    pub fn markers(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, markers: true }
    }
}

/// A 2-D line chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Plot log10(x) (non-positive x dropped).
    pub log_x: bool,
    /// Plot log10(y) (non-positive y dropped).
    pub log_y: bool,
    /// Curves.
    pub series: Vec<Series>,
    /// Horizontal reference lines (label, y).
    pub hlines: Vec<(String, f64)>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn tf(v: f64, log: bool) -> Option<f64> {
    if log {
        if v > 0.0 && v.is_finite() {
            Some(v.log10())
        } else {
            None
        }
    } else if v.is_finite() {
        Some(v)
    } else {
        None
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, c: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
    let data: Vec<Vec<(f64, f64)>> = c
        .series
        .iter()
        .map(|s| s.points.iter().filter_map(|&(x, y)| Some((tf(x, c.log_x)?, tf(y, c.log_y)?))).collect())
        .collect();
    let hl: Vec<(String, f64)> = c.hlines.iter().filter_map(|(n, y)| Some((n.clone(), tf(*y, c.log_y)?))).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in data.iter().flatten() {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y0 = y0.min(p.1);
        y1 = y1.max(p.1);
    }
    for (_, y) in &hl {
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 - y0 < 1e-12 * (1.0 + y0.abs()) {
        y0 -= 0.5 * (1.0 + y0.abs()) * 1e-3 + 0.5;
        y1 += 0.5 * (1.0 + y1.abs()) * 1e-3 + 0.5;
    }
    let pad = 0.05 * (y1 - y0);
    let xl = if c.log_x { format!("log10 {}", c.x_label) } else { c.x_label.clone() };
    let yl = if c.log_y { format!("log10 {}", c.y_label) } else { c.y_label.clone() };
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
    chart
        .configure_mesh()
        .x_desc(xl)
        .y_desc(yl)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
    for (i, (s, pts)) in c.series.iter().zip(&data).enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        if s.markers {
            let drawn = chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
                .map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
            if !s.name.is_empty() {
                drawn.label(s.name.clone()).legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
            }
        } else {
            let drawn = chart
                .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
                .map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
            if !s.name.is_empty() {
                drawn
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
            }
        }
    }
    for (k, (name, y)) in hl.iter().enumerate() {
        let col = PALETTE[(c.series.len() + k) % PALETTE.len()];
        let y = *y;
        chart
            .draw_series(DashedLineSeries::new(vec![(x0, y), (x1, y)], 8, 5, col.stroke_width(2)))
            .map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?
            .label(name.clone())
            .legend(move |(x, yy)| PathElement::new(vec![(x, yy), (x + 20, yy)], col.stroke_width(2)));
    }
    if !c.series.is_empty() || !hl.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
    }
    root.present().map_err(|e| Error::InvalidInput(format!("plot: {e:?}")))?;
    Ok(())
}

fn tmp_with_ext(path: &Path, ext: &str) -> PathBuf {
    let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "plot".into());
    path.with_file_name(format!(".{name}.tmp-{}.{ext}", std::process::id()))
}

/// The chart as an SVG document (800 x 500), e.g. to inline into an HTML page.
pub fn svg(chart: &Chart) -> Result<String> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        draw(root, chart)?;
    }
    Ok(svg)
}

/// Write `stem.svg` and `stem.png` (800 x 500) for the chart; each file appears only when complete. Returns the
/// SVG text.
pub fn save(chart: &Chart, stem: &Path) -> Result<String> {
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    let svg = svg(chart)?;
    crate::data::io::write_atomic(&svg_path, |w| std::io::Write::write_all(w, svg.as_bytes()))?;
    let tmp = tmp_with_ext(&png_path, "png");
    let res = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, (800, 500)).into_drawing_area();
        draw(root, chart)?;
        Ok(())
    })();
    match res {
        Ok(()) => std::fs::rename(&tmp, &png_path).map(|_| svg).map_err(|e| Error::file(&png_path, e)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
