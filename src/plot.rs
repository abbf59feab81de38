//! Line plots and grouped bar charts as PNG and SVG with plotters. The font is embedded (DejaVu Sans) and registered
//! from bytes, so text renders on machines without fontconfig.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, ensure, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

static FONT: Once = Once::new();
/// The embedded font, also for text drawn into images (report grids).
pub const FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font once; call before drawing text with plotters.
pub fn ensure_font() {
    FONT.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES)
            .unwrap_or_else(|_| panic!("embedded font is valid"));
    });
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Style {
    Line,
    Dots,
    /// Points taken in pairs, each pair one segment: error bars.
    Segments,
}

/// One named series.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
}

impl Series {
    pub fn line(label: &str, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.into(), points, style: Style::Line }
    }

    pub fn dots(label: &str, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.into(), points, style: Style::Dots }
    }

    /// Vertical bars from lo to hi at each x.
    pub fn bars(label: &str, bars: &[(f64, f64, f64)]) -> Series {
        let points = bars.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]).collect();
        Series { label: label.into(), points, style: Style::Segments }
    }
}

/// A chart: title, axis labels and series; `log_x`/`log_y` for token, compute or loss axes.
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_x: bool,
    pub log_y: bool,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

impl LinePlot {
    /// Writes `{stem}.png` and `{stem}.svg`. A log y axis is drawn as log10(y) on a linear
    /// axis labelled in y: plotters' own log axis leaves a range narrower than a decade (a
    /// loss axis) without labels.
    pub fn save(&self, stem: &Path) -> Result<()> {
        ensure_font();
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|s| {
                let points = s
                    .points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || *y > 0.0))
                    .map(|&(x, y)| (x, if self.log_y { y.log10() } else { y }))
                    .collect();
                Series { label: s.label.clone(), points, style: s.style }
            })
            .collect();
        let points: Vec<&(f64, f64)> = series.iter().flat_map(|s| &s.points).collect();
        ensure!(!points.is_empty(), "nothing to plot for {}", self.title);
        let png = stem.with_extension("png");
        let svg = stem.with_extension("svg");
        self.draw(BitMapBackend::new(&png, (900, 560)).into_drawing_area(), &series, &points)?;
        self.draw(SVGBackend::new(&svg, (900, 560)).into_drawing_area(), &series, &points)?;
        Ok(())
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
        series: &[Series],
        points: &[&(f64, f64)],
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plotting {}: {e:?}", self.title);
        root.fill(&WHITE).map_err(err)?;
        let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (mut y0, mut y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        (y0, y1) = (y0 - pad, y1 + pad);
        let y_label = |y: &f64| human(if self.log_y { 10f64.powf(*y) } else { *y });
        if self.log_x {
            (x0, x1) = (x0.max(1e-12) * 0.8, x1 * 1.25);
        }
        let log_x = self.log_x;
        let fx = |x: f64| if log_x { x.max(1e-300).log10() } else { x };
        let corner = emptiest_corner(series, |x, y| ((fx(x) - fx(x0)) / (fx(x1) - fx(x0)), (y - y0) / (y1 - y0)));
        let mut builder = ChartBuilder::on(&root);
        builder.caption(&self.title, ("sans-serif", 24)).margin(16).x_label_area_size(48).y_label_area_size(64);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .x_label_formatter(&|x: &f64| human(*x))
                    .y_label_formatter(&y_label)
                    .y_labels(10)
                    .label_style(("sans-serif", 14))
                    .draw()
                    .map_err(err)?;
                for (i, s) in series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    let pts: Vec<(f64, f64)> =
                        s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
                    let drawn = match s.style {
                        Style::Line => chart.draw_series(LineSeries::new(pts, color.stroke_width(2))),
                        Style::Dots => chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled()))),
                        Style::Segments => chart.draw_series(
                            pts.chunks_exact(2).map(|w| PathElement::new(vec![w[0], w[1]], color.stroke_width(2))),
                        ),
                    };
                    drawn
                        .map_err(err)?
                        .label(&s.label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                }
                draw_legend(&mut chart, corner).map_err(err)?;
            }};
        }
        if self.log_x {
            finish!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(err)?);
        } else {
            finish!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
        }
        root.present().map_err(err)?;
        Ok(())
    }
}

/// Bars of several named groups side by side for each category (e.g. accuracy of the model, of
/// a text-only baseline and of chance, per question type), on a 0..`y_max` axis.
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (group name, one value per category)
    pub groups: Vec<(String, Vec<f64>)>,
    pub y_max: f64,
}

impl BarChart {
    /// Writes `{stem}.png` and `{stem}.svg`.
    pub fn save(&self, stem: &Path) -> Result<()> {
        ensure_font();
        ensure!(!self.categories.is_empty(), "nothing to plot for {}", self.title);
        for (name, values) in &self.groups {
            ensure!(values.len() == self.categories.len(), "group {name} has a value per category");
        }
        let (png, svg) = (stem.with_extension("png"), stem.with_extension("svg"));
        self.draw(BitMapBackend::new(&png, (900, 520)).into_drawing_area())?;
        self.draw(SVGBackend::new(&svg, (900, 520)).into_drawing_area())
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plotting {}: {e:?}", self.title);
        root.fill(&WHITE).map_err(err)?;
        let n = self.categories.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..self.y_max)
            .map_err(err)?;
        let names = &self.categories;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x: &f64| {
                let centre = x - x.floor();
                match ((centre - 0.5).abs() < 1e-6, names.get(x.floor() as usize)) {
                    (true, Some(name)) => name.clone(),
                    _ => String::new(),
                }
            })
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        let width = 0.8 / self.groups.len() as f64;
        for (g, (name, values)) in self.groups.iter().enumerate() {
            let color = COLORS[g % COLORS.len()];
            let bars = values.iter().enumerate().map(|(i, &v)| {
                let x0 = i as f64 + 0.1 + g as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v.clamp(0.0, self.y_max))], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }
}

/// The corner of the plot whose third holds the fewest drawn points (`points` in 0..1 of each
/// axis, lines sampled between their vertices), so the legend hides as little as it can; the
/// upper right on a tie.
fn emptiest_corner(series: &[Series], to_unit: impl Fn(f64, f64) -> (f64, f64)) -> SeriesLabelPosition {
    let mut counts = [0usize; 4];
    let mut count = |x: f64, y: f64| {
        let (u, v) = to_unit(x, y);
        let corner = match (v > 0.6, v < 0.4, u > 0.6, u < 0.4) {
            (true, _, true, _) => 0,
            (true, _, _, true) => 1,
            (_, true, true, _) => 2,
            (_, true, _, true) => 3,
            _ => return,
        };
        counts[corner] += 1;
    };
    for s in series {
        for (i, &(x, y)) in s.points.iter().enumerate() {
            count(x, y);
            if let (Style::Line, Some(&(x2, y2))) = (s.style, s.points.get(i + 1)) {
                for k in 1..10 {
                    let t = k as f64 / 10.0;
                    count(x + t * (x2 - x), y + t * (y2 - y));
                }
            }
        }
    }
    match (0..4).min_by_key(|&i| counts[i]).unwrap_or(0) {
        0 => SeriesLabelPosition::UpperRight,
        1 => SeriesLabelPosition::UpperLeft,
        2 => SeriesLabelPosition::LowerRight,
        _ => SeriesLabelPosition::LowerLeft,
    }
}

/// The series labels at `position`, on a translucent white box.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

/// Compact tick labels: 1.5k, 2M, 3e12.
pub fn human(x: f64) -> String {
    let a = x.abs();
    if a < 1e-12 {
        // A tick that floating point left a hair from zero (-6e-17) is zero.
        return "0".into();
    }
    let (v, suffix) = match a {
        _ if a >= 1e15 || (a > 0.0 && a < 1e-3) => return format!("{x:.0e}"),
        _ if a >= 1e12 => (x / 1e12, "T"),
        _ if a >= 1e9 => (x / 1e9, "G"),
        _ if a >= 1e6 => (x / 1e6, "M"),
        _ if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// One logged metric (e.g. a validation accuracy) against the run's unit, from its metrics JSONL.
pub fn metric_plot(metrics: &Path, stem: &Path, title: &str, x_key: &str, key: &str) -> Result<()> {
    let records = crate::jsonl::read_jsonl(metrics)?;
    let points = records.iter().filter_map(|r| Some((r[x_key].as_f64()?, r[key].as_f64()?))).collect();
    LinePlot {
        title: title.to_string(),
        x_label: x_key.into(),
        y_label: key.into(),
        series: vec![Series::line(key, points)],
        log_x: false,
        log_y: false,
    }
    .save(stem)
}

/// Train and validation loss against tokens, from a run's metrics JSONL.
/// `baseline`, when given, is drawn as a flat labelled line (e.g. the unigram entropy).
/// `x_key` names the metrics field on the x axis (the run's unit: tokens, pairs).
pub fn loss_plot(metrics: &Path, stem: &Path, title: &str, x_key: &str, baseline: Option<(&str, f64)>) -> Result<()> {
    let records = crate::jsonl::read_jsonl(metrics)?;
    let series = |key: &str| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| Some((r[x_key].as_f64()?, r[key].as_f64()?))).collect()
    };
    let train = series("train_loss");
    let mut lines = vec![Series::line("val", series("val_loss"))];
    if let (Some((label, y)), Some(first), Some(last)) = (baseline, train.first(), train.last()) {
        lines.push(Series::line(label, vec![(first.0, y), (last.0, y)]));
    }
    lines.insert(0, Series::line("train", train));
    LinePlot {
        title: title.to_string(),
        x_label: x_key.into(),
        y_label: format!("loss (nats/{})", x_key.trim_end_matches('s')),
        series: lines,
        log_x: false,
        log_y: false,
    }
    .save(stem)
}
