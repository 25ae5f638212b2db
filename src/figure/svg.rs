//! Static SVG of a figure's plotly spec (scatter, bar and heat-map traces, the kinds
//! [`crate::figure`] makes), for places where plotly.js cannot run: notebooks rendered on GitHub,
//! Markdown viewers. Same data, titles and trace names as the interactive HTML.
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use serde_json::Value;

use crate::error::{Error, Result};

/// plotly's default trace colours, in its order (static figures use them so they match the HTML).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn fail(e: impl std::fmt::Display) -> Error {
    Error::param("figure", format!("SVG rendering: {e}"))
}

/// A title given as `{"text": …}` or a bare string.
fn title(v: &Value) -> String {
    v["text"]
        .as_str()
        .or_else(|| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn nums(v: &Value) -> Vec<f64> {
    let arr = v.as_array().map(Vec::as_slice).unwrap_or_default();
    arr.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn labels(v: &Value) -> Vec<String> {
    let arr = v.as_array().map(Vec::as_slice).unwrap_or_default();
    arr.iter()
        .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
        .collect()
}

/// A trace colour: `marker.color` or `line.color` when given (`#rrggbb` or a few names), else the
/// palette's `k`-th.
fn color(trace: &Value, k: usize) -> RGBColor {
    let given = trace["marker"]["color"]
        .as_str()
        .or_else(|| trace["line"]["color"].as_str());
    let named = match given {
        Some("black") => Some(BLACK),
        Some("grey" | "gray") => Some(RGBColor(127, 127, 127)),
        Some("red") => Some(RED),
        Some(s) if s.len() == 7 && s.starts_with('#') => {
            let c = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
            c(1).zip(c(3))
                .zip(c(5))
                .map(|((r, g), b)| RGBColor(r, g, b))
        }
        _ => None,
    };
    named.unwrap_or(PALETTE[k % PALETTE.len()])
}

/// `lo..hi` padded by 5 % (a unit range around a single value).
fn padded(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0)..(hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad)..(hi + pad)
}

/// The label of category `v` (an integer position) or "" between categories.
fn category(names: &[String], v: f64) -> String {
    let r = v.round();
    if (v - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < names.len() {
        names[r as usize].clone()
    } else {
        String::new()
    }
}

/// Renders a plotly spec (`{"data": [...], "layout": {...}}`) as an SVG document.
pub fn render(spec: &Value) -> Result<String> {
    let layout = &spec["layout"];
    let size = |k: &str, d: u64| layout[k].as_u64().unwrap_or(d).clamp(200, 2000) as u32;
    let traces: Vec<&Value> = spec["data"].as_array().into_iter().flatten().collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (size("width", 760), size("height", 480)))
            .into_drawing_area();
        root.fill(&WHITE).map_err(fail)?;
        let root = root
            .titled(&title(&layout["title"]), ("sans-serif", 18))
            .map_err(fail)?;
        let axes = (
            title(&layout["xaxis"]["title"]),
            title(&layout["yaxis"]["title"]),
        );
        let kind = |t: &&Value| t["type"].as_str().unwrap_or("scatter").to_string();
        if traces.iter().any(|t| kind(t) == "heatmap") {
            heatmap(&root, traces[0], &axes)?;
        } else if traces.iter().any(|t| kind(t) == "bar") {
            bars(&root, &traces, &axes)?;
        } else {
            scatter(&root, &traces, &axes, layout["xaxis"]["type"] == "log")?;
        }
        root.present().map_err(fail)?;
    }
    Ok(svg)
}

/// Each trace's finite (x, y) points, x as log10 on a log axis.
fn trace_points(traces: &[&Value], log_x: bool) -> Vec<Vec<(f64, f64)>> {
    let tx = |v: f64| if log_x { v.log10() } else { v };
    traces
        .iter()
        .map(|t| {
            let (x, y) = (nums(&t["x"]), nums(&t["y"]));
            x.into_iter()
                .zip(y)
                .map(|(a, b)| (tx(a), b))
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .collect()
        })
        .collect()
}

/// Marker and line traces on numeric axes (a log x axis drawn as log10 with 10^v labels).
fn scatter(root: &Area, traces: &[&Value], axes: &(String, String), log_x: bool) -> Result<()> {
    let series = trace_points(traces, log_x);
    let x_range = padded(series.iter().flatten().map(|p| p.0));
    let y_range = padded(series.iter().flatten().map(|p| p.1));
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(x_range, y_range)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .x_desc(axes.0.as_str())
        .y_desc(axes.1.as_str())
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| {
            if log_x {
                format!("{:.0}", 10f64.powf(*v))
            } else {
                format!("{v:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        })
        .draw()
        .map_err(fail)?;
    let mut legend = false;
    for (k, (t, pts)) in traces.iter().zip(&series).enumerate() {
        let c = color(t, k);
        let mode = t["mode"].as_str().unwrap_or("markers");
        let name = t["name"].as_str().unwrap_or_default().to_string();
        legend |= !name.is_empty();
        if mode.contains("lines") {
            let s = chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(fail)?;
            if !mode.contains("markers") {
                s.label(name.clone())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c));
            }
        }
        if mode.contains("markers") {
            let r = (t["marker"]["size"].as_f64().unwrap_or(6.0) / 2.0).max(1.0) as i32;
            let alpha = t["marker"]["opacity"].as_f64().unwrap_or(1.0);
            // one marker per pixel: markers drawn on the same pixel look the same, and dense
            // gene scatters stay small
            let mut seen = std::collections::HashSet::new();
            let shown: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|p| seen.insert(chart.backend_coord(p)))
                .collect();
            chart
                .draw_series(
                    shown
                        .into_iter()
                        .map(|p| Circle::new(p, r, c.mix(alpha).filled())),
                )
                .map_err(fail)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(fail)?;
    }
    Ok(())
}

/// Room for category labels on x: horizontal when short, else turned 90°.
fn x_label_room(names: &[String]) -> (u32, bool) {
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    if longest <= 10 || names.len() <= 3 {
        (42, false)
    } else {
        ((longest as u32 * 7 + 20).min(220), true)
    }
}

/// Category labels turned 90°, each starting just below its position `at(i)` (backend pixels):
/// plotters centres axis labels on the tick, which would put half of a turned label inside the plot.
fn turned_labels(root: &Area, names: &[String], at: impl Fn(usize) -> (i32, i32)) -> Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let base = root.get_base_pixel();
    let style = TextStyle::from(("sans-serif", 12))
        .transform(FontTransform::Rotate90)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, name) in names.iter().enumerate() {
        let (x, y) = at(i);
        root.draw(&Text::new(
            name.clone(),
            (x - base.0, y - base.1 + 8),
            style.clone(),
        ))
        .map_err(fail)?;
    }
    Ok(())
}

/// Grouped bars: one series per trace, categories (x) in order of first appearance.
fn bars(root: &Area, traces: &[&Value], axes: &(String, String)) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    for t in traces {
        for c in labels(&t["x"]) {
            if !names.contains(&c) {
                names.push(c);
            }
        }
    }
    let values: Vec<Vec<(usize, f64)>> = traces
        .iter()
        .map(|t| {
            let ys = nums(&t["y"]);
            labels(&t["x"])
                .iter()
                .zip(ys)
                .filter_map(|(c, y)| Some((names.iter().position(|n| n == c)?, y)))
                .collect()
        })
        .collect();
    let top = values.iter().flatten().map(|v| v.1).fold(0.0, f64::max);
    let bottom = values.iter().flatten().map(|v| v.1).fold(0.0, f64::min);
    let (room, turned) = x_label_room(&names);
    let n = names.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(room)
        .y_label_area_size(62)
        .build_cartesian_2d(
            -0.5..(n as f64 - 0.5),
            bottom..(top * 1.35).max(bottom + 1e-9),
        )
        .map_err(fail)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .x_labels(n + 2)
        .x_label_formatter(&|v| {
            if turned {
                String::new()
            } else {
                category(&names, *v)
            }
        })
        .label_style(("sans-serif", 13))
        .y_desc(axes.1.as_str())
        .draw()
        .map_err(fail)?;
    if turned {
        turned_labels(root, &names, |i| chart.backend_coord(&(i as f64, bottom)))?;
    }
    let width = 0.8 / traces.len().max(1) as f64;
    for (k, (t, vals)) in traces.iter().zip(&values).enumerate() {
        let c = color(t, k);
        let left = |i: usize| i as f64 - 0.4 + k as f64 * width;
        chart
            .draw_series(
                vals.iter().filter(|v| v.1.is_finite()).map(|&(i, y)| {
                    Rectangle::new([(left(i), 0.0), (left(i) + width, y)], c.filled())
                }),
            )
            .map_err(fail)?
            .label(t["name"].as_str().unwrap_or_default().to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(fail)?;
    Ok(())
}

/// A heat map (`z[row][col]`, rows = y labels from the bottom), viridis, values written in the
/// cells when there are at most 400.
fn heatmap(root: &Area, trace: &Value, axes: &(String, String)) -> Result<()> {
    let (xs, ys) = (labels(&trace["x"]), labels(&trace["y"]));
    let z: Vec<Vec<f64>> = trace["z"]
        .as_array()
        .into_iter()
        .flatten()
        .map(nums)
        .collect();
    let finite = || z.iter().flatten().copied().filter(|v| v.is_finite());
    let lo = finite().fold(f64::INFINITY, f64::min);
    let hi = finite().fold(f64::NEG_INFINITY, f64::max).max(lo + 1e-12);
    let (room, turned) = x_label_room(&xs);
    let y_room = ys.iter().map(|s| s.chars().count()).max().unwrap_or(0) as u32 * 7 + 20;
    let (nx, ny) = (xs.len().max(1), ys.len().max(1));
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(room)
        .y_label_area_size(y_room.clamp(40, 220))
        .build_cartesian_2d(-0.5..(nx as f64 - 0.5), -0.5..(ny as f64 - 0.5))
        .map_err(fail)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nx + 2)
        .y_labels(ny + 2)
        .x_label_formatter(&|v| {
            if turned {
                String::new()
            } else {
                category(&xs, *v)
            }
        })
        .y_label_formatter(&|v| category(&ys, *v))
        .label_style(("sans-serif", 12))
        .x_desc(axes.0.as_str())
        .y_desc(axes.1.as_str())
        .draw()
        .map_err(fail)?;
    if turned {
        turned_labels(root, &xs, |j| chart.backend_coord(&(j as f64, -0.5)))?;
    }
    let cells: Vec<(usize, usize, f64)> = z
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.iter().enumerate().map(move |(j, &v)| (i, j, v)))
        .filter(|c| c.2.is_finite())
        .collect();
    chart
        .draw_series(cells.iter().map(|&(i, j, v)| {
            let c = ViridisRGB::get_color_normalized(v, lo, hi);
            let (x, y) = (j as f64, i as f64);
            Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], c.filled())
        }))
        .map_err(fail)?;
    if cells.len() <= 400 {
        chart
            .draw_series(cells.iter().map(|&(i, j, v)| {
                let ink = if (v - lo) / (hi - lo) > 0.6 {
                    &BLACK
                } else {
                    &WHITE
                };
                let s = if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                };
                let style = TextStyle::from(("sans-serif", 11)).color(ink).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
                Text::new(s, (j as f64, i as f64), style)
            }))
            .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure;

    #[test]
    fn renders_every_kind_of_figure() {
        let s = figure::spec(&figure::scatter_true_vs_pred(
            "t<&>",
            &[0.1, 0.2],
            &[0.12, 0.18],
        ));
        let svg = render(&s).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("\nt&lt;&amp;&gt;\n"));
        assert!(svg.matches("<circle").count() >= 2, "one marker per point");
        let bars = figure::grouped_bars(
            "b",
            "F1",
            &["a".into(), "b".into()],
            &[
                ("s1".into(), vec![Some(0.5), Some(0.7)]),
                ("s2".into(), vec![None, Some(0.2)]),
            ],
        );
        let svg = render(&figure::spec(&bars)).unwrap();
        assert!(svg.contains("\ns2\n") && svg.contains("\na\n"));
        let c = figure::confusion("c", &["x".into(), "y".into()], &[vec![3, 1], vec![0, 5]]);
        let svg = render(&figure::spec(&c)).unwrap();
        assert!(
            svg.contains("\n5\n") && svg.contains("\n3\n"),
            "counts written in the cells"
        );
    }
}
