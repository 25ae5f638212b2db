//! Figures: plotly specs (JSON, snapshot-tested) and offline HTML.
//!
//! plotly.js 3.0.1's cartesian bundle (`assets/plotly`, about 1.3 MB, the version the `plotly`
//! crate targets) is built into the binary, so a figure opens without network access. A figure of
//! a results folder (`<root>/<experiment>/figures/<stem>.html`) loads the one shared copy
//! `<root>/plotly.min.js` ([`write_in_results`]); a page written on its own embeds it ([`html`]).
pub mod svg;

use std::path::Path;

use plotly::common::{Line, Marker, Mode, Title};
use plotly::layout::{Axis, BarMode};
use plotly::{Bar, Layout, Plot, Scatter};

use crate::error::Result;
use crate::report::write_atomic;

/// plotly.js, cartesian partial bundle (scatter, bar, heatmap, box...), stored gzip-compressed in
/// the repository (`assets/plotly/plotly-cartesian-3.0.1.min.js.gz`; `gzip -dk` gives the published
/// file) and inflated once.
pub fn plotly_js() -> &'static str {
    static JS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JS.get_or_init(|| {
        use std::io::Read;
        let gz: &[u8] = include_bytes!("../../assets/plotly/plotly-cartesian-3.0.1.min.js.gz");
        let mut js = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut js)
            .expect("the bundled plotly.js is gzip of UTF-8 text (checked by a test)");
        js
    })
}

/// Rounds to 4 decimals (figure data is rounded so specs are stable across machines).
pub fn r4(v: f64) -> f64 {
    let r = (v * 1e4).round() / 1e4;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// The figure's JSON spec (`{"data": …, "layout": …}`), as plotly.js reads it.
pub fn spec(plot: &Plot) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&plot.to_json()).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("config");
    }
    v
}

/// The shared copy of plotly.js at a results root, which every figure below it loads.
pub const SHARED_JS: &str = "plotly.min.js";

/// How a page loads plotly.js.
#[derive(Debug, Clone, Copy)]
pub enum Script<'a> {
    /// Inlined in the page (standalone, about 1.3 MB).
    Embedded,
    /// A `<script src>` with this relative address.
    Shared(&'a str),
}

/// A standalone HTML page showing `plot`, with plotly.js embedded.
pub fn html(plot: &Plot, title: &str) -> String {
    html_with(plot, title, Script::Embedded)
}

/// An HTML page showing `plot`, loading plotly.js as `script` says.
pub fn html_with(plot: &Plot, title: &str, script: Script) -> String {
    // `</` inside a script must not close it
    let json = serde_json::to_string(&spec(plot))
        .unwrap_or_default()
        .replace("</", "<\\/");
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let script = match script {
        Script::Embedded => format!("<script type=\"text/javascript\">{}</script>", plotly_js()),
        Script::Shared(src) => format!(
            "<script type=\"text/javascript\" src=\"{}\"></script>",
            src.replace('&', "&amp;").replace('"', "&quot;")
        ),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n<title>{title}</title>\n{script}\n</head>\n<body>\n<div id=\"figure\" style=\"width:100%;height:90vh;\"></div>\n<script type=\"text/javascript\">\nPlotly.newPlot(\"figure\", {json});\n</script>\n</body>\n</html>\n"
    )
}

/// Writes `<folder>/figures/<stem>.html` of a results folder (`folder` = `<root>/<name>`, or its
/// staging folder beside it) loading `<root>/plotly.min.js`, which is written when missing or
/// stale; returns the spec.
pub fn write_in_results(
    plot: &Plot,
    folder: &Path,
    stem: &str,
    title: &str,
) -> Result<serde_json::Value> {
    let root = folder
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let js = root.join(SHARED_JS);
    if std::fs::read(&js).ok().as_deref() != Some(plotly_js().as_bytes()) {
        write_atomic(&js, plotly_js().as_bytes())?;
    }
    let src = format!("../../{SHARED_JS}");
    write_atomic(
        folder.join("figures").join(format!("{stem}.html")),
        html_with(plot, title, Script::Shared(&src)).as_bytes(),
    )?;
    Ok(spec(plot))
}

/// Writes `<dir>/<stem>.html` (plotly.js embedded) and returns the spec.
pub fn write(plot: &Plot, dir: &Path, stem: &str, title: &str) -> Result<serde_json::Value> {
    write_atomic(
        dir.join(format!("{stem}.html")),
        html(plot, title).as_bytes(),
    )?;
    Ok(spec(plot))
}

/// True vs reconstructed scatter with the y = x line.
pub fn scatter_true_vs_pred(title: &str, truth: &[f64], pred: &[f64]) -> Plot {
    let x: Vec<f64> = truth.iter().map(|&v| r4(v)).collect();
    let y: Vec<f64> = pred.iter().map(|&v| r4(v)).collect();
    let lo = x.iter().chain(&y).copied().fold(f64::INFINITY, f64::min);
    let hi = x
        .iter()
        .chain(&y)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() {
        (r4(lo), r4(hi))
    } else {
        (0.0, 1.0)
    };
    let mut plot = Plot::new();
    plot.add_trace(
        Scatter::new(x, y)
            .mode(Mode::Markers)
            .name("expressed entries (sample)")
            .marker(Marker::new().size(3).opacity(0.35)),
    );
    plot.add_trace(
        Scatter::new(vec![lo, hi], vec![lo, hi])
            .mode(Mode::Lines)
            .name("y = x")
            .line(Line::new().color("black").width(1.0)),
    );
    plot.set_layout(layout(
        title,
        "true normalized expression",
        "reconstructed from log-rank",
        (720, 640),
    ));
    plot
}

/// A titled layout with both axes titled, `size` = (width, height) in pixels.
fn layout(title: &str, x_title: &str, y_title: &str, size: (usize, usize)) -> Layout {
    Layout::new()
        .title(Title::with_text(title))
        .x_axis(Axis::new().title(Title::with_text(x_title)))
        .y_axis(Axis::new().title(Title::with_text(y_title)))
        .width(size.0)
        .height(size.1)
}

/// A scatter plot with one marker trace per named group (e.g. HVG vs other genes, or cell types).
pub fn scatter_groups(
    title: &str,
    x_title: &str,
    y_title: &str,
    groups: &[(String, Vec<f64>, Vec<f64>)],
) -> Plot {
    let mut plot = Plot::new();
    for (name, x, y) in groups {
        plot.add_trace(
            Scatter::new(
                x.iter().map(|&v| r4(v)).collect(),
                y.iter().map(|&v| r4(v)).collect(),
            )
            .mode(Mode::Markers)
            .name(name)
            .marker(Marker::new().size(4).opacity(0.6)),
        );
    }
    plot.set_layout(layout(title, x_title, y_title, (760, 560)));
    plot
}

/// A grouped bar chart: one trace per series, `categories` on x.
pub fn grouped_bars(
    title: &str,
    y_title: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Plot {
    let mut plot = Plot::new();
    for (name, vals) in series {
        let (xs, ys): (Vec<String>, Vec<f64>) = categories
            .iter()
            .zip(vals)
            .filter_map(|(c, v)| v.map(|v| (c.clone(), r4(v))))
            .unzip();
        plot.add_trace(Bar::new(xs, ys).name(name));
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(title))
            .bar_mode(BarMode::Group)
            .y_axis(Axis::new().title(Title::with_text(y_title)))
            .width(900)
            .height(520),
    );
    plot
}

/// Training (and validation, where measured) loss against the step.
pub fn loss_curve(title: &str, steps: &[f64], train: &[f64], val: &[(f64, f64)]) -> Plot {
    let mut plot = Plot::new();
    plot.add_trace(
        Scatter::new(steps.to_vec(), train.iter().map(|&v| r4(v)).collect())
            .mode(Mode::Lines)
            .name("train loss"),
    );
    if !val.is_empty() {
        plot.add_trace(
            Scatter::new(
                val.iter().map(|v| v.0).collect(),
                val.iter().map(|v| r4(v.1)).collect(),
            )
            .mode(Mode::LinesMarkers)
            .name("validation loss"),
        );
    }
    plot.set_layout(layout(
        title,
        "step",
        "causal-LM cross-entropy (nats/token)",
        (720, 480),
    ));
    plot
}

/// Lines with markers, one per `(name, x, y)` series.
pub fn lines(
    title: &str,
    x_title: &str,
    y_title: &str,
    series: &[(String, Vec<f64>, Vec<f64>)],
) -> Plot {
    let mut plot = Plot::new();
    for (name, x, y) in series {
        plot.add_trace(
            Scatter::new(x.clone(), y.iter().map(|&v| r4(v)).collect())
                .mode(Mode::LinesMarkers)
                .name(name),
        );
    }
    plot.set_layout(layout(title, x_title, y_title, (760, 480)));
    plot
}

/// A confusion-matrix heat map: rows are true labels, columns predictions (counts).
pub fn confusion(title: &str, labels: &[String], counts: &[Vec<usize>]) -> Plot {
    let z: Vec<Vec<f64>> = counts
        .iter()
        .map(|r| r.iter().map(|&c| c as f64).collect())
        .collect();
    let mut plot = Plot::new();
    plot.add_trace(plotly::HeatMap::new(labels.to_vec(), labels.to_vec(), z).name("cells"));
    plot.set_layout(layout(title, "predicted", "true", (760, 700)));
    plot
}

/// A heat map of `z[row][col]` with named columns (x) and rows (y).
pub fn heatmap(
    title: &str,
    cols: &[String],
    rows: &[String],
    z: &[Vec<f64>],
    x_title: &str,
    y_title: &str,
) -> Plot {
    let z: Vec<Vec<f64>> = z
        .iter()
        .map(|r| r.iter().map(|&v| r4(v)).collect())
        .collect();
    let mut plot = Plot::new();
    plot.add_trace(plotly::HeatMap::new(cols.to_vec(), rows.to_vec(), z).name("score"));
    plot.set_layout(layout(title, x_title, y_title, (1100, 560)));
    plot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_offline_and_small() {
        let p = scatter_true_vs_pred("t", &[0.1, 0.2], &[0.12, 0.18]);
        let h = html(&p, "t");
        assert!(!h.contains("<script src"), "no external script");
        assert!(h.contains("plotly.js (cartesian"));
        assert!(h.len() < 2_000_000);
        assert_eq!(spec(&p)["data"][0]["x"][0], 0.1);
    }

    /// The bundled plotly.js inflates to the published file of plotly.js-cartesian-dist-min@3.0.1.
    #[test]
    fn bundled_plotly_is_the_pinned_release() {
        assert_eq!(
            crate::cache::sha256_hex(plotly_js().as_bytes()),
            "27c5203ecba052de6447603696f39558f5d1961839ba7ab153639f66d3d0d569"
        );
    }

    #[test]
    fn results_figures_share_one_plotly() {
        let root = tempfile::tempdir().unwrap();
        let p = scatter_true_vs_pred("t", &[0.1, 0.2], &[0.12, 0.18]);
        for name in ["a", "b"] {
            let spec = write_in_results(&p, &root.path().join(name), "fig", "t").unwrap();
            assert_eq!(spec, super::spec(&p));
        }
        let js = std::fs::read_to_string(root.path().join(SHARED_JS)).unwrap();
        assert_eq!(js, plotly_js());
        let h = std::fs::read_to_string(root.path().join("b/figures/fig.html")).unwrap();
        assert!(h.contains("src=\"../../plotly.min.js\""));
        assert!(!h.contains("plotly.js (cartesian"), "not embedded");
        assert!(h.len() < 20_000);
        // a stale copy is replaced
        std::fs::write(root.path().join(SHARED_JS), "old").unwrap();
        write_in_results(&p, &root.path().join("a"), "fig", "t").unwrap();
        let js = std::fs::read_to_string(root.path().join(SHARED_JS)).unwrap();
        assert_eq!(js, plotly_js());
    }
}
