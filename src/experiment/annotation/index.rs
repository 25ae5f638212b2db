//! The annotation run's `index.md`.
use crate::experiment::default_select;
use crate::experiment::outputs::names;
use crate::experiment::Experiment;

/// The run's `index.md`: links to every table and figure, the default chosen and what was
/// skipped.
pub(super) fn index_md(
    e: &Experiment,
    ids: &[String],
    quality: bool,
    selection: Option<&default_select::Selection>,
    skipped: &[String],
) -> String {
    let mut index = format!("# {}\n\n{}\n\n- [annotation](annotation.md) — ours beside the paper\n- [reported](reported.md) — the paper's quoted rows\n", e.name, e.description);
    for id in ids {
        index.push_str(&format!(
            "- {id}: [per-class F1]({}), [bar chart]({}), [confusion]({})\n",
            names::md(&names::per_class(id)),
            names::html(&names::annotation_figure(id)),
            names::html(&names::confusion_figure(id))
        ));
    }
    if quality {
        index.push_str(&format!(
            "- [embedding quality]({}) — clusters, silhouettes and batch mixing of every embedding\n",
            names::md(names::QUALITY)
        ));
    }
    if let Some(sel) = selection {
        index.push_str(&format!(
            "- [default selection]({}) — the held-out default chosen on {} (never an evaluated dataset): {}\n",
            names::md(names::DEFAULT_SELECTION),
            sel.dataset,
            sel.chosen.prefix()
        ));
    }
    if !skipped.is_empty() {
        index.push_str("\nSkipped:\n");
        for s in skipped {
            index.push_str(&format!("- {s}\n"));
        }
    }
    index
}
