//! The experiment's report: a Markdown table like the paper's (mean and spread over seeds),
//! CSV, results.json, and PNG plots of the metric against augmentation strength and labeled
//! fraction.
use crate::error::Result;
use crate::experiment::{ArmResult, ExperimentConfig};
use crate::plots::{self, Bar, BarChart, LinePlot, Point, Series, XAxis};
use pupil_data::io;
use std::collections::BTreeMap;
use std::path::Path;

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

fn row_name(r: &ArmResult) -> String {
    format!(
        "{} init{}",
        if r.init == "random" {
            "Rand"
        } else {
            "Pre-trained"
        },
        if r.self_training {
            " + self-training"
        } else {
            ""
        }
    )
}

/// Writes results.json, results.csv, report.md and the plots; returns the Markdown table.
pub fn write(out: &Path, exp: &ExperimentConfig, results: &[ArmResult]) -> Result<String> {
    io::write_json_atomic(out.join("results.json"), &results)?;
    let mut csv =
        String::from("name,init,self_training,augment,labeled_fraction,seed,metric,AP50,seconds\n");
    for r in results {
        csv += &format!(
            "{},{},{},{},{},{},{:.6},{:.6},{:.1}\n",
            r.name,
            r.init,
            r.self_training,
            r.augment,
            r.labeled_fraction,
            r.seed,
            r.metrics.primary,
            r.metrics.values.get("AP50").copied().unwrap_or(f64::NAN),
            r.seconds
        );
    }
    io::write_atomic(out.join("results.csv"), csv.as_bytes())?;
    let metric = exp.base.task.metric();
    // rows: init x self-training; columns: augmentation x fraction
    let mut cols: Vec<(String, f64)> = Vec::new();
    for a in &exp.augment {
        for &f in &exp.labeled_fractions {
            cols.push((a.clone(), f));
        }
    }
    let mut rows: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    let mut cells50: BTreeMap<(String, usize), Vec<f64>> = BTreeMap::new();
    for r in results {
        let name = row_name(r);
        if !rows.contains(&name) {
            rows.push(name.clone());
        }
        if let Some(c) = cols
            .iter()
            .position(|c| c.0 == r.augment && c.1 == r.labeled_fraction)
        {
            cells
                .entry((name.clone(), c))
                .or_default()
                .push(100.0 * r.metrics.primary);
            if let Some(v) = r.metrics.values.get("AP50") {
                cells50.entry((name, c)).or_default().push(100.0 * v);
            }
        }
    }
    let seeds = exp.seeds.len();
    let mut md = format!(
        "| Setup ({metric}{}) |",
        if seeds > 1 {
            format!(", mean ± sd over {seeds} seeds")
        } else {
            String::new()
        }
    );
    for (a, f) in &cols {
        md += &format!(" {} {:.0}% |", a.to_uppercase(), f * 100.0);
        if !cells50.is_empty() {
            md += &format!(" {} {:.0}% AP50 |", a.to_uppercase(), f * 100.0);
        }
    }
    md += "\n|---|";
    for _ in &cols {
        md += "---|";
        if !cells50.is_empty() {
            md += "---|";
        }
    }
    md += "\n";
    let base_row = rows
        .iter()
        .find(|r| r.starts_with("Rand") && !r.contains("self"))
        .cloned();
    for row in &rows {
        md += &format!("| {row} |");
        for c in 0..cols.len() {
            for (table, gain) in [(&cells, true), (&cells50, false)] {
                if table.is_empty() {
                    continue;
                }
                match table.get(&(row.clone(), c)) {
                    Some(v) => {
                        let (m, sd) = mean_sd(v);
                        let mut s = if seeds > 1 {
                            format!(" {m:.1} ± {sd:.1}")
                        } else {
                            format!(" {m:.1}")
                        };
                        if gain {
                            if let Some(b) = base_row
                                .as_ref()
                                .filter(|b| *b != row)
                                .and_then(|b| table.get(&(b.clone(), c)))
                            {
                                let d = m - mean_sd(b).0;
                                s += &format!(" ({d:+.1})");
                            }
                        }
                        md += &s;
                        md += " |";
                    }
                    None => md += " - |",
                }
            }
        }
        md += "\n";
    }
    let mut report = String::from("# pupil experiment\n\n");
    report += &format!("Task: {:?}; backbone: {}; {} seed(s); metric in percent, gain over Rand init in parentheses.\n\n", exp.base.task, exp.base.backbone.name, seeds);
    report += &md;
    report += "\nPer arm: results.json, results.csv; each arm's folder holds metrics.jsonl and model.safetensors.\n";
    report += &write_plots(out, exp, &rows, &cells, &cols)?;
    io::write_atomic(out.join("report.md"), report.as_bytes())?;
    Ok(md)
}

type Cells = BTreeMap<(String, usize), Vec<f64>>;

/// The series of each setup over the columns `pick` keeps, x from `x_of(column)`.
fn setup_series(
    rows: &[String],
    cells: &Cells,
    cols: usize,
    pick: impl Fn(usize) -> Option<f64>,
) -> Vec<Series> {
    rows.iter()
        .map(|row| Series {
            name: row.clone(),
            points: (0..cols)
                .filter_map(|c| {
                    let (m, sd) = mean_sd(cells.get(&(row.clone(), c))?);
                    Some(Point::new(pick(c)?, m, sd))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// The plots of a grid (metric against augmentation, against labeled fraction, or per setup
/// for a single cell) and the report's lines that show them.
fn write_plots(
    out: &Path,
    exp: &ExperimentConfig,
    rows: &[String],
    cells: &Cells,
    cols: &[(String, f64)],
) -> Result<String> {
    let metric = exp.base.task.metric();
    let seeds = exp.seeds.len();
    let spread = if seeds > 1 {
        format!(", mean ± sd over {seeds} seeds")
    } else {
        String::new()
    };
    let y_label = format!("{metric} (%)");
    let last_frac = exp.labeled_fractions.last().copied().unwrap_or(1.0);
    let last_aug = exp.augment.last().cloned().unwrap_or_default();
    let mut md = String::new();
    if exp.augment.len() > 1 {
        let augs: Vec<String> = exp.augment.iter().map(|a| a.to_uppercase()).collect();
        let plot = LinePlot {
            title: format!(
                "{metric} vs augmentation ({:.0}% labeled{spread})",
                last_frac * 100.0
            ),
            x_label: "augmentation strength".into(),
            y_label: y_label.clone(),
            series: setup_series(rows, cells, cols.len(), |c| {
                let (a, f) = &cols[c];
                ((f - last_frac).abs() < 1e-9)
                    .then(|| exp.augment.iter().position(|x| x == a).map(|i| i as f64))
                    .flatten()
            }),
            x: XAxis::Categories(augs),
        };
        plots::line_plot(&out.join("plot_augment.png"), &plot)?;
        md += "\n![metric vs augmentation strength](plot_augment.png)\n";
    }
    if exp.labeled_fractions.len() > 1 {
        let plot = LinePlot {
            title: format!(
                "{metric} vs labeled data ({}{spread})",
                last_aug.to_uppercase()
            ),
            x_label: "labeled data (%)".into(),
            y_label: y_label.clone(),
            series: setup_series(rows, cells, cols.len(), |c| {
                (cols[c].0 == last_aug).then(|| cols[c].1 * 100.0)
            }),
            x: XAxis::Ticks(exp.labeled_fractions.iter().map(|f| f * 100.0).collect()),
        };
        plots::line_plot(&out.join("plot_fraction.png"), &plot)?;
        md += "\n![metric vs labeled fraction](plot_fraction.png)\n";
    }
    if exp.augment.len() == 1 && exp.labeled_fractions.len() == 1 {
        let bars = rows
            .iter()
            .filter_map(|r| {
                let (mean, sd) = mean_sd(cells.get(&(r.clone(), 0))?);
                Some(Bar {
                    name: r.clone(),
                    mean,
                    sd,
                })
            })
            .collect();
        let chart = BarChart {
            title: format!(
                "{metric} per setup ({}, {:.0}% labeled{spread})",
                last_aug.to_uppercase(),
                last_frac * 100.0
            ),
            value_label: y_label,
            bars,
        };
        plots::bar_chart(&out.join("plot_arms.png"), &chart)?;
        md += "\n![metric per setup](plot_arms.png)\n";
    }
    Ok(md)
}
