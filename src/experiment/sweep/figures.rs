//! The sweep's figures: sentence length against reconstruction R², annotation macro-F1 and
//! AvgBIO, one line per flavor, the random-gene controls as a min–max band (plotly and static SVG).
use super::{SweepPoint, ALL_GENES, RANDOM};
use crate::error::{Error, Result};
use crate::figure;

/// The random controls' spread at one `n_top`: mean sentence length, (min, max) of R² and of
/// macro-F1 over the seeds.
struct BandPoint {
    x: f64,
    r2: (f64, f64),
    f1: (f64, f64),
    bio: (f64, f64),
}

/// The figures' view of the points: HVG flavors and the full sentence as they are; the random
/// controls as one mean point per `n_top` (a line) and their min–max over seeds (a band).
fn with_controls(pts: &[SweepPoint]) -> (Vec<SweepPoint>, Vec<BandPoint>) {
    let mut lines: Vec<SweepPoint> = pts.iter().filter(|p| p.seed.is_none()).cloned().collect();
    let mut band = Vec::new();
    let mut n_tops: Vec<usize> = pts
        .iter()
        .filter(|p| p.seed.is_some())
        .map(|p| p.n_top)
        .collect();
    n_tops.sort_unstable();
    n_tops.dedup();
    for k in n_tops {
        let sel: Vec<&SweepPoint> = pts
            .iter()
            .filter(|p| p.seed.is_some() && p.n_top == k)
            .collect();
        let n = sel.len() as f64;
        let mean = |g: fn(&SweepPoint) -> f64| sel.iter().map(|p| g(p)).sum::<f64>() / n;
        let span = |g: fn(&SweepPoint) -> f64| {
            sel.iter()
                .map(|p| g(p))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                })
        };
        lines.push(SweepPoint {
            flavor: format!("{RANDOM} (mean of {} seeds)", sel.len()),
            n_top: k,
            n_genes: sel[0].n_genes,
            mean_length: mean(|p| p.mean_length),
            r2: mean(|p| p.r2),
            pearson: mean(|p| p.pearson),
            spearman: mean(|p| p.spearman),
            accuracy: mean(|p| p.accuracy),
            macro_f1: mean(|p| p.macro_f1),
            macro_f1_sd: mean(|p| p.macro_f1_sd),
            seed: None,
            avg_bio: sel[0].avg_bio.map(|_| mean(bio)),
            dataset: sel[0].dataset.clone(),
        });
        band.push(BandPoint {
            x: mean(|p| p.mean_length),
            r2: span(|p| p.r2),
            f1: span(|p| p.macro_f1),
            bio: span(bio),
        });
    }
    (lines, band)
}

fn bio(p: &SweepPoint) -> f64 {
    p.avg_bio.unwrap_or(f64::NAN)
}

/// The figures' panels: title, axis label, a point's value, the controls' span.
type Metric = (
    &'static str,
    &'static str,
    fn(&SweepPoint) -> f64,
    fn(&BandPoint) -> (f64, f64),
);

/// Reconstruction and annotation, and AvgBIO where the points have it.
fn metrics(pts: &[SweepPoint]) -> Vec<Metric> {
    let mut m: Vec<Metric> = vec![
        (
            "Reconstruction",
            "reconstruction R² (C2S line)",
            |p| p.r2,
            |b| b.r2,
        ),
        (
            "Annotation",
            "annotation macro-F1 (SVM on sentence)",
            |p| p.macro_f1,
            |b| b.f1,
        ),
    ];
    if pts.iter().any(|p| p.avg_bio.is_some()) {
        m.push((
            "Embedding quality",
            "AvgBIO of PCA(50) of the genes",
            bio,
            |b| b.bio,
        ));
    }
    m
}

/// The flavors of `pts` in first-seen order (one line each in the figures).
fn flavors(pts: &[SweepPoint]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for p in pts {
        if !out.contains(&p.flavor.as_str()) {
            out.push(&p.flavor);
        }
    }
    out
}

/// Plotly's axis names of panel `k` (`x`/`y`, `x2`/`y2`, …).
fn panel_axes(k: usize) -> (String, String) {
    match k {
        0 => ("x".to_string(), "y".to_string()),
        k => (format!("x{}", k + 1), format!("y{}", k + 1)),
    }
}

/// The random controls' min–max band in every panel (an invisible upper edge, the lower edge
/// filled up to it).
fn band_traces(plot: &mut plotly::Plot, band: &[BandPoint], metrics: &[Metric]) {
    use plotly::common::{Fill, Line, Mode};
    use plotly::Scatter;
    if band.is_empty() {
        return;
    }
    let x: Vec<f64> = band.iter().map(|b| figure::r4(b.x)).collect();
    for (k, &(_, _, _, span)) in metrics.iter().enumerate() {
        let (xa, ya) = panel_axes(k);
        let edge = |hi: bool| -> Vec<f64> {
            band.iter()
                .map(|b| figure::r4(if hi { span(b).1 } else { span(b).0 }))
                .collect()
        };
        plot.add_trace(
            Scatter::new(x.clone(), edge(true))
                .mode(Mode::Lines)
                .line(Line::new().width(0.0))
                .name("random genes (min–max)")
                .legend_group("band")
                .show_legend(false)
                .x_axis(&xa)
                .y_axis(&ya),
        );
        plot.add_trace(
            Scatter::new(x.clone(), edge(false))
                .mode(Mode::Lines)
                .line(Line::new().width(0.0))
                .fill(Fill::ToNextY)
                .fill_color("rgba(127,127,127,0.25)")
                .name("random genes (min–max over seeds)")
                .legend_group("band")
                .show_legend(k == 0)
                .x_axis(&xa)
                .y_axis(&ya),
        );
    }
}

/// The sweep figure: reconstruction R² and annotation macro-F1 against mean sentence length, one
/// line per flavor, the full sentence as a separate marker; two panels side by side.
pub(super) fn sweep_figure(title: &str, pts: &[SweepPoint]) -> plotly::Plot {
    let mut plot = plotly::Plot::new();
    let metrics = metrics(pts);
    let (pts, band) = with_controls(pts);
    band_traces(&mut plot, &band, &metrics);
    for f in flavors(&pts) {
        flavor_traces(&mut plot, &pts, f, &metrics);
    }
    plot.set_layout(sweep_layout(title, &metrics));
    plot
}

/// One flavor's line (a marker where it has one point) in every panel with a finite value.
fn flavor_traces(plot: &mut plotly::Plot, pts: &[SweepPoint], f: &str, metrics: &[Metric]) {
    use plotly::common::{Marker, MarkerSymbol, Mode};
    let sel: Vec<&SweepPoint> = pts.iter().filter(|p| p.flavor == f).collect();
    let x: Vec<f64> = sel.iter().map(|p| figure::r4(p.mean_length)).collect();
    let text: Vec<String> = sel
        .iter()
        .map(|p| match p.n_top {
            0 => "all genes".into(),
            k => format!("n_top {k}"),
        })
        .collect();
    let mode = if sel.len() > 1 {
        Mode::LinesMarkers
    } else {
        Mode::Markers
    };
    let marker = if f == ALL_GENES {
        Marker::new().size(12).symbol(MarkerSymbol::Star)
    } else {
        Marker::new().size(7)
    };
    for (k, &(_, _, value, _)) in metrics.iter().enumerate() {
        let (xa, ya) = panel_axes(k);
        if sel.iter().all(|p| !value(p).is_finite()) {
            continue;
        }
        let y: Vec<f64> = sel.iter().map(|p| figure::r4(value(p))).collect();
        plot.add_trace(
            plotly::Scatter::new(x.clone(), y)
                .mode(mode.clone())
                .name(f)
                .legend_group(f)
                .show_legend(k == 0)
                .text_array(text.clone())
                .marker(marker.clone())
                .x_axis(&xa)
                .y_axis(&ya),
        );
    }
}

/// The panels side by side, each titled by its metric.
fn sweep_layout(title: &str, metrics: &[Metric]) -> plotly::Layout {
    use plotly::common::{Anchor, Title};
    use plotly::layout::{Annotation, Axis, GridPattern, LayoutGrid};
    let n = metrics.len();
    let panel = |text: &str, k: usize| {
        Annotation::new()
            .text(text)
            .x((k as f64 + 0.5) / n as f64)
            .y(1.06)
            .x_ref("paper")
            .y_ref("paper")
            .x_anchor(Anchor::Center)
            .show_arrow(false)
    };
    let x_axis = || Axis::new().title(Title::with_text("mean genes per sentence"));
    let y_axis = |k: usize| Axis::new().title(Title::with_text(metrics[k].1));
    let mut layout = plotly::Layout::new()
        .title(Title::with_text(title))
        .grid(
            LayoutGrid::new()
                .rows(1)
                .columns(n)
                .pattern(GridPattern::Independent),
        )
        .x_axis(x_axis())
        .x_axis2(x_axis())
        .y_axis(y_axis(0))
        .y_axis2(y_axis(1))
        .annotations(
            metrics
                .iter()
                .enumerate()
                .map(|(k, m)| panel(m.0, k))
                .collect(),
        )
        .width(550 * n)
        .height(520);
    if n > 2 {
        layout = layout.x_axis3(x_axis()).y_axis3(y_axis(2));
    }
    layout
}

/// The same panels as a static SVG (for the README and Markdown viewers): log-scaled sentence
/// length, one line per flavor, the full sentence as a larger marker.
pub(super) fn sweep_svg(title: &str, pts: &[SweepPoint]) -> Result<String> {
    use plotters::prelude::*;
    let (pts, band) = with_controls(pts);
    let flavors = flavors(&pts);
    let lo = pts
        .iter()
        .map(|p| p.mean_length)
        .fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.mean_length).fold(0.0, f64::max);
    let x_range = (lo.max(1.0) / 1.5)..(hi.max(2.0) * 1.5);
    let mut svg = String::new();
    {
        let metrics = metrics(&pts);
        let root = SVGBackend::with_string(&mut svg, (500 * metrics.len() as u32, 420))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| svg_err(&e))?;
        let root = root
            .titled(title, ("sans-serif", 26))
            .map_err(|e| svg_err(&e))?;
        let panels = root.split_evenly((1, metrics.len()));
        for (area, m) in panels.iter().zip(&metrics) {
            svg_panel(area, (&pts, &band, &flavors), x_range.clone(), m)?;
        }
        root.present().map_err(|e| svg_err(&e))?;
    }
    Ok(svg)
}

/// An SVG drawing error, as the sweep reports it.
fn svg_err(e: &dyn std::fmt::Display) -> Error {
    Error::param("hvg_sweep", format!("SVG figure: {e}"))
}

/// One metric's panel of [`sweep_svg`]: the controls' band, then a line per flavor.
fn svg_panel(
    area: &plotters::drawing::DrawingArea<
        plotters::prelude::SVGBackend<'_>,
        plotters::coord::Shift,
    >,
    (pts, band, flavors): (&[SweepPoint], &[BandPoint], &[&str]),
    x_range: std::ops::Range<f64>,
    &(_, label, value, span): &Metric,
) -> Result<()> {
    use crate::figure::svg::PALETTE;
    use plotters::prelude::*;
    let y_lo = pts
        .iter()
        .map(value)
        .chain(band.iter().map(|b| span(b).0))
        .fold(1.0, f64::min);
    let y_range = (y_lo - 0.05).clamp(0.0, 0.9)..1.0;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.log_scale(), y_range)
        .map_err(|e| svg_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("mean genes per sentence")
        .y_desc(label)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| svg_err(&e))?;
    if !band.is_empty() {
        let grey = RGBColor(127, 127, 127);
        let mut poly: Vec<(f64, f64)> = band.iter().map(|b| (b.x, span(b).1)).collect();
        poly.extend(band.iter().rev().map(|b| (b.x, span(b).0)));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, grey.mix(0.25).filled())))
            .map_err(|e| svg_err(&e))?
            .label("random genes (min–max)")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], grey.mix(0.25).filled())
            });
    }
    for (k, f) in flavors.iter().enumerate() {
        let color = if f.starts_with(RANDOM) {
            RGBColor(90, 90, 90)
        } else {
            PALETTE[k % PALETTE.len()]
        };
        let sel: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.flavor == *f && value(p).is_finite())
            .map(|p| (figure::r4(p.mean_length), figure::r4(value(p))))
            .collect();
        if sel.is_empty() {
            continue;
        }
        let size = if sel.len() == 1 { 7 } else { 4 };
        if sel.len() > 1 {
            chart
                .draw_series(LineSeries::new(sel.clone(), color.stroke_width(2)))
                .map_err(|e| svg_err(&e))?;
        }
        chart
            .draw_series(sel.iter().map(|&p| Circle::new(p, size, color.filled())))
            .map_err(|e| svg_err(&e))?
            .label(*f)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| svg_err(&e))
}
