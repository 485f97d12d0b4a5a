//! Plots through plotters (its bitmap backend; text in the embedded DejaVu Sans through
//! pupil-data's ab_glyph rasteriser): named series with
//! error bars over a numeric or categorical x, horizontal bars with error bars, several
//! panels in one picture, and a run's training curves from its `metrics.jsonl`.
use crate::error::{Error, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use pupil_data::{io, Image};
use std::path::Path;

mod canvas;
mod run;
use canvas::Canvas;
pub use run::{run_curves, run_plot, RUN_PLOT};

/// One point of a series: a mean (over seeds) and its standard deviation (0: no error bar).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub mean: f64,
    pub sd: f64,
}

impl Point {
    pub fn new(x: f64, mean: f64, sd: f64) -> Self {
        Point { x, mean, sd }
    }
}

/// A named line (the legend shows the name).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
}

/// The x axis: numbers with evenly spaced round ticks, numbers with ticks at given values,
/// or categories (a point's x is its category's index).
#[derive(Clone, Debug, PartialEq)]
pub enum XAxis {
    Numeric,
    Ticks(Vec<f64>),
    Categories(Vec<String>),
}

/// A line plot of several series with titled axes.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x: XAxis,
    pub series: Vec<Series>,
}

/// One bar: a named mean with its standard deviation.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub name: String,
    pub mean: f64,
    pub sd: f64,
}

/// Horizontal bars (names read along the left axis) with error bars and their values.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub value_label: String,
    pub bars: Vec<Bar>,
}

/// A linear f64 axis whose ticks are the given values (plotters' own f64 axis picks its
/// ticks and cannot take given ones with a label formatter).
#[derive(Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo).max(1e-300);
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

const FONT: &str = "sans-serif";
/// Matplotlib's tab10 colours.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// The colour of series `i`.
pub fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

fn fail(e: impl std::fmt::Display) -> Error {
    Error::msg(format!("drawing the plot: {e}"))
}

type Area<'a> = DrawingArea<Canvas<'a>, Shift>;

/// Draws into a `w` x `h` white picture and writes it as PNG (atomically).
fn render(path: &Path, (w, h): (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = Canvas(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
        draw(&root).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        root.present().map_err(fail)?;
    }
    io::write_png(path, &Image::from_raw(w as usize, h as usize, 3, buf))?;
    Ok(())
}

/// Width of the legend beside a chart of these plots (0 when none has two series).
fn legend_width(plots: &[LinePlot]) -> u32 {
    (plots.iter().filter(|p| p.series.len() > 1))
        .flat_map(|p| p.series.iter())
        .map(|s| pupil_data::draw::text_size(&s.name, 14.0).0 as u32 + 56)
        .max()
        .unwrap_or(0)
}

/// A chart `chart_w` pixels wide and, for two series or more, their legend beside it, so it
/// never covers a line or an error bar.
fn draw_plot(area: &Area, p: &LinePlot, chart_w: u32) -> Result<()> {
    let (chart, legend) = area.split_horizontally(chart_w);
    draw_lines(&chart, p)?;
    if p.series.len() > 1 {
        draw_legend(&legend, p)?;
    }
    Ok(())
}

/// One line plot as a PNG.
pub fn line_plot(path: &Path, plot: &LinePlot) -> Result<()> {
    let lw = legend_width(std::slice::from_ref(plot));
    render(path, (720 + lw, 460), |root| {
        root.fill(&WHITE).map_err(fail)?;
        draw_plot(root, plot, 720)
    })
}

/// A legend of the plot's series, a line of each colour and its name, centred in `area`.
fn draw_legend(area: &Area, p: &LinePlot) -> Result<()> {
    let (_, h) = area.dim_in_pixel();
    let row = 26;
    let top = (h as i32 - row * p.series.len() as i32) / 2;
    let style = (FONT, 14).into_font().color(&BLACK);
    let style = style.pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in p.series.iter().enumerate() {
        let y = top + row * i as i32 + row / 2;
        let line = PathElement::new(vec![(4, y), (30, y)], colour(i).stroke_width(3));
        area.draw(&line).map_err(fail)?;
        area.draw(&Circle::new((17, y), 4, colour(i).filled()))
            .map_err(fail)?;
        area.draw(&Text::new(s.name.clone(), (38, y), style.clone()))
            .map_err(fail)?;
    }
    Ok(())
}

/// Several line plots in a grid of `cols` columns under one title, as a PNG.
pub fn panels(path: &Path, title: &str, plots: &[LinePlot], cols: usize) -> Result<()> {
    if plots.is_empty() {
        return Err(Error::msg(format!("{}: nothing to plot", path.display())));
    }
    let cols = cols.clamp(1, plots.len());
    let rows = plots.len().div_ceil(cols);
    let lw = legend_width(plots);
    let size = (cols as u32 * (600 + lw), rows as u32 * 380 + 40);
    render(path, size, |root| {
        root.fill(&WHITE).map_err(fail)?;
        let body = root.titled(title, (FONT, 24)).map_err(fail)?;
        for (area, p) in body.split_evenly((rows, cols)).iter().zip(plots) {
            draw_plot(area, p, 600)?;
        }
        Ok(())
    })
}

/// Round tick values covering `[lo, hi]`, about `n` of them (steps of 1, 2, 2.5 or 5 times
/// a power of ten), and the step.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / n.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, step)
}

/// A tick value with as many decimals as its step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let mut d = (-step.log10().floor()).max(0.0) as usize;
    if ((step / 10f64.powi(-(d as i32))) - 2.5).abs() < 1e-9 {
        d += 1;
    }
    let s = format!("{:.*}", d, v);
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".into()
    } else {
        s
    }
}

/// `[lo, hi]` of the values with a margin; a single value gets a span around it.
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = hi - lo;
    if span.abs() < 1e-12 {
        let d = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - d, hi + d);
    }
    (lo - span * frac, hi + span * frac)
}

fn min_max(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    v.filter(|x| x.is_finite()).fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((a, b)) => Some((a.min(x), b.max(x))),
    })
}

/// The x range and tick values of a plot.
fn x_axis(p: &LinePlot) -> (f64, f64, Vec<f64>, f64) {
    let xs = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.x));
    match &p.x {
        XAxis::Categories(c) => {
            let n = c.len().max(1) as f64;
            (-0.5, n - 0.5, (0..c.len()).map(|i| i as f64).collect(), 1.0)
        }
        XAxis::Ticks(t) => {
            let (lo, hi) = min_max(xs.chain(t.iter().copied())).unwrap_or((0.0, 1.0));
            let (lo, hi) = padded(lo, hi, 0.06);
            let step = min_max(t.windows(2).map(|w| (w[1] - w[0]).abs())).map_or(1.0, |m| m.0);
            (lo, hi, t.clone(), step)
        }
        XAxis::Numeric => {
            let (lo, hi) = min_max(xs).unwrap_or((0.0, 1.0));
            let (lo, hi) = if hi > lo {
                (lo, hi)
            } else {
                padded(lo, hi, 0.0)
            };
            let (t, step) = nice_ticks(lo, hi, 6);
            (lo, hi, t, step)
        }
    }
}

/// The y range of a plot (means and error bars, with a margin) and its ticks.
fn y_axis(p: &LinePlot) -> (f64, f64, Vec<f64>, f64) {
    let ys = p.series.iter().flat_map(|s| {
        s.points
            .iter()
            .flat_map(|q| [q.mean - q.sd.max(0.0), q.mean + q.sd.max(0.0)])
    });
    let (lo, hi) = min_max(ys).unwrap_or((0.0, 1.0));
    let (plo, phi) = padded(lo, hi, 0.08);
    // data that is never negative (losses, rates, metrics) keeps the axis at or above 0
    let plo = if lo >= 0.0 { plo.max(0.0) } else { plo };
    let phi = if phi <= plo { plo + 1.0 } else { phi };
    let (t, step) = nice_ticks(plo, phi, 6);
    (plo, phi, t, step)
}

/// The x offset of series `i` of `n` where error bars at one x would overlap.
fn dodge(p: &LinePlot, i: usize) -> f64 {
    let n = p.series.len();
    let bars = p.series.iter().any(|s| s.points.iter().any(|q| q.sd > 0.0));
    if n < 2 || !bars || p.x == XAxis::Numeric {
        return 0.0;
    }
    let (x0, x1, _, _) = x_axis(p);
    (i as f64 - (n - 1) as f64 / 2.0) * (x1 - x0) * 0.008
}

/// One chart of a plot.
fn draw_lines(area: &Area, p: &LinePlot) -> Result<()> {
    let (x0, x1, xt, xstep) = x_axis(p);
    let (y0, y1, yt, ystep) = y_axis(p);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            Axis {
                lo: x0,
                hi: x1,
                ticks: xt,
            },
            Axis {
                lo: y0,
                hi: y1,
                ticks: yt,
            },
        )
        .map_err(fail)?;
    let cats = match &p.x {
        XAxis::Categories(c) => Some(c.clone()),
        _ => None,
    };
    let xfmt = |v: &f64| match &cats {
        Some(c) => c
            .get(v.round().max(0.0) as usize)
            .cloned()
            .unwrap_or_default(),
        None => fmt_tick(*v, xstep),
    };
    chart
        .configure_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&xfmt)
        .y_label_formatter(&|v| fmt_tick(*v, ystep))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(fail)?;
    for (i, s) in p.series.iter().enumerate() {
        draw_series(&mut chart, s, colour(i), dodge(p, i))?;
    }
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, Canvas<'b>, Cartesian2d<Axis, Axis>>;

/// One series shifted by `dx`: its line, markers where points are few, error bars where
/// sd > 0.
fn draw_series(chart: &mut Chart, s: &Series, c: RGBColor, dx: f64) -> Result<()> {
    let pts: Vec<(f64, f64)> = (s.points.iter())
        .filter(|q| q.x.is_finite() && q.mean.is_finite())
        .map(|q| (q.x + dx, q.mean))
        .collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
        .map_err(fail)?;
    if pts.len() <= 12 {
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(fail)?;
    }
    let bars = (s.points.iter())
        .filter(|q| q.sd > 0.0 && q.sd.is_finite() && q.mean.is_finite())
        .map(|q| {
            let (lo, hi) = (q.mean - q.sd, q.mean + q.sd);
            ErrorBar::new_vertical(q.x + dx, lo, q.mean, hi, c.stroke_width(2), 10)
        });
    chart.draw_series(bars).map_err(fail)?;
    Ok(())
}

/// Horizontal bars with error bars and "mean ± sd" written beside each, as a PNG.
pub fn bar_chart(path: &Path, chart: &BarChart) -> Result<()> {
    let n = chart.bars.len().max(1);
    let name_w = (chart.bars.iter())
        .map(|b| pupil_data::draw::text_size(&b.name, 15.0).0)
        .max()
        .unwrap_or(40) as u32;
    let size = (name_w + 640, 150 + 60 * n as u32);
    render(path, size, |root| draw_bars(root, chart, name_w + 24))
}

fn draw_bars(root: &Area, c: &BarChart, name_area: u32) -> Result<()> {
    root.fill(&WHITE).map_err(fail)?;
    let n = c.bars.len();
    let hi = min_max(c.bars.iter().map(|b| b.mean + b.sd.max(0.0))).map_or(1.0, |m| m.1);
    let lo = min_max(c.bars.iter().map(|b| b.mean - b.sd.max(0.0))).map_or(0.0, |m| m.0);
    // room on the right for the written values
    let x1 = if hi > 1e-12 { hi * 1.25 } else { 1.0 };
    let (x0, x1) = (lo.min(0.0), x1);
    let (xt, xstep) = nice_ticks(x0, x1, 6);
    let yt: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let names: Vec<String> = c.bars.iter().rev().map(|b| b.name.clone()).collect();
    let mut ch = ChartBuilder::on(root)
        .caption(&c.title, (FONT, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(name_area)
        .build_cartesian_2d(
            Axis {
                lo: x0,
                hi: x1,
                ticks: xt,
            },
            Axis {
                lo: -0.6,
                hi: n as f64 - 0.4,
                ticks: yt,
            },
        )
        .map_err(fail)?;
    let yfmt = |v: &f64| {
        names
            .get(v.round().max(0.0) as usize)
            .cloned()
            .unwrap_or_default()
    };
    ch.configure_mesh()
        .x_desc(&c.value_label)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 15))
        .x_label_formatter(&|v| fmt_tick(*v, xstep))
        .y_label_formatter(&yfmt)
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(fail)?;
    let pad = (x1 - x0) * 0.01;
    let font = (FONT, 15).into_font().color(&BLACK);
    let label = font.pos(Pos::new(HPos::Left, VPos::Center));
    for (i, b) in c.bars.iter().enumerate() {
        // the first bar on top
        let y = (n - 1 - i) as f64;
        let col = colour(i);
        let rect = Rectangle::new([(0.0, y - 0.32), (b.mean, y + 0.32)], col.filled());
        ch.draw_series(std::iter::once(rect)).map_err(fail)?;
        let sd = b.sd.max(0.0);
        let text = if sd > 0.0 {
            let (l, r) = (b.mean - sd, b.mean + sd);
            let whisker = [
                vec![(l, y), (r, y)],
                vec![(l, y - 0.12), (l, y + 0.12)],
                vec![(r, y - 0.12), (r, y + 0.12)],
            ];
            let style = BLACK.stroke_width(2);
            ch.draw_series(whisker.into_iter().map(|p| PathElement::new(p, style)))
                .map_err(fail)?;
            format!("{:.1} ± {:.1}", b.mean, sd)
        } else {
            format!("{:.1}", b.mean)
        };
        let at = (b.mean.max(0.0) + sd + pad, y);
        ch.draw_series(std::iter::once(Text::new(text, at, label.clone())))
            .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        let (t, s) = nice_ticks(0.0, 42.3, 5);
        assert_eq!(s, 10.0);
        assert_eq!(t, vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        let (t, s) = nice_ticks(0.0001, 0.0123, 6);
        assert_eq!(s, 0.0025);
        assert_eq!(fmt_tick(t[1], s), "0.0050");
        assert_eq!(fmt_tick(2000.0, 500.0), "2000");
        assert_eq!(fmt_tick(-0.0, 0.5), "0");
    }

    /// Pixels of a PNG that are neither white nor near-white.
    fn ink(path: &Path) -> (Image, usize) {
        let img = io::read_image(path).unwrap();
        let n = img
            .data
            .chunks(3)
            .filter(|p| p.iter().any(|&v| v < 200))
            .count();
        (img, n)
    }

    #[test]
    fn lines_bars_and_panels_are_drawn() {
        let d = tempfile::tempdir().unwrap();
        let series = |name: &str, off: f64| Series {
            name: name.into(),
            points: (0..4)
                .map(|i| Point::new(i as f64, 30.0 + off + i as f64, 1.5))
                .collect(),
        };
        let plot = LinePlot {
            title: "AP vs augmentation".into(),
            x_label: "augmentation".into(),
            y_label: "AP (%)".into(),
            x: XAxis::Categories(["S1", "S2", "S3", "S4"].map(String::from).to_vec()),
            series: vec![
                series("Rand init", 0.0),
                series("Rand init + self-training", 3.0),
            ],
        };
        let p = d.path().join("lines.png");
        line_plot(&p, &plot).unwrap();
        let (img, n) = ink(&p);
        // the legend sits beside the 720-pixel chart
        assert!(
            img.width > 720 + 150 && img.height == 460,
            "{}x{}",
            img.width,
            img.height
        );
        assert!(n > 2000, "too little drawn: {n}");
        // the second series' colour is on the picture (its line, markers or legend)
        let c = colour(1);
        assert!(img.data.chunks(3).any(|q| q == [c.0, c.1, c.2]));

        let bars = BarChart {
            title: "AP per setup".into(),
            value_label: "AP (%)".into(),
            bars: vec![
                Bar {
                    name: "Rand init".into(),
                    mean: 36.4,
                    sd: 2.9,
                },
                Bar {
                    name: "Pre-trained init + self-training".into(),
                    mean: 34.9,
                    sd: 0.0,
                },
            ],
        };
        let p = d.path().join("bars.png");
        bar_chart(&p, &bars).unwrap();
        assert!(ink(&p).1 > 2000);

        let p = d.path().join("panels.png");
        panels(&p, "run", &[plot.clone(), plot], 2).unwrap();
        assert!(ink(&p).0.width > 2 * 600 + 2 * 150);
        let e = panels(&p, "run", &[], 2).unwrap_err().to_string();
        assert!(
            e.contains("panels.png") && e.contains("nothing to plot"),
            "{e}"
        );
    }
}
