//! The experiment's report: a Markdown table like the paper's (mean and spread over seeds),
//! CSV, results.json, and PNG plots of the metric against augmentation strength and labeled
//! fraction.
use crate::error::Result;
use crate::experiment::{ArmResult, ExperimentConfig};
use pupil_data::draw::{class_colour, draw_number};
use pupil_data::{io, Image};
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
    if exp.augment.len() > 1 {
        plot(
            &out.join("plot_augment.png"),
            &rows,
            &cells,
            &cols,
            |c| cols.iter().position(|x| x.0 == cols[c].0).unwrap_or(0) as f64,
            exp.labeled_fractions.last().copied(),
            |c| cols[c].1,
        )?;
        report += "\n![metric vs augmentation strength](plot_augment.png)\n\nx axis: augmentation S1..S4 (left to right); one line per setup, colours as the table's row order.\n";
    }
    if exp.labeled_fractions.len() > 1 {
        plot(
            &out.join("plot_fraction.png"),
            &rows,
            &cells,
            &cols,
            |c| cols[c].1 * 100.0,
            None,
            |_| 0.0,
        )?;
        report += "\n![metric vs labeled fraction](plot_fraction.png)\n\nx axis: percent of labeled data; one line per setup, colours as the table's row order.\n";
    }
    if exp.augment.len() == 1 && exp.labeled_fractions.len() == 1 {
        bars(&out.join("plot_arms.png"), &rows, &cells)?;
        report += "\n![metric per arm](plot_arms.png)\n\nOne bar per setup in the table's row order (height = metric in percent, the number above each bar).\n";
    }
    io::write_atomic(out.join("report.md"), report.as_bytes())?;
    Ok(md)
}

fn line(img: &mut Image, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
    let n = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for k in 0..=n {
        let x = x0 + (x1 - x0) * k / n;
        let y = y0 + (y1 - y0) * k / n;
        for dy in 0..2 {
            if x >= 0 && y + dy >= 0 && (x as usize) < img.width && ((y + dy) as usize) < img.height
            {
                img.pixel_mut(x as usize, (y + dy) as usize)
                    .copy_from_slice(&c);
            }
        }
    }
}

fn axes(w: usize, h: usize, lo: f64, hi: f64) -> (Image, impl Fn(f64) -> i64) {
    let mut img = Image::new(w, h, 3, 255);
    let (top, bottom, left) = (20i64, h as i64 - 30, 40i64);
    line(&mut img, (left, top), (left, bottom), [0, 0, 0]);
    line(&mut img, (left, bottom), (w as i64 - 10, bottom), [0, 0, 0]);
    let to_y = move |v: f64| {
        bottom - ((v - lo) / (hi - lo).max(1e-9) * (bottom - top) as f64).round() as i64
    };
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let y = to_y(v);
        line(&mut img, (left - 4, y), (left, y), [0, 0, 0]);
        draw_number(
            &mut img,
            2,
            y - 3,
            v.round().max(0.0) as u32,
            [0, 0, 0],
            [255, 255, 255],
        );
    }
    (img, to_y)
}

type Cells = BTreeMap<(String, usize), Vec<f64>>;

fn plot(
    path: &Path,
    rows: &[String],
    cells: &Cells,
    cols: &[(String, f64)],
    x_of: impl Fn(usize) -> f64,
    only_fraction: Option<f64>,
    frac_of: impl Fn(usize) -> f64,
) -> Result<()> {
    let vals: Vec<f64> = cells.values().map(|v| mean_sd(v).0).collect();
    let (lo, hi) = (
        vals.iter()
            .cloned()
            .fold(f64::MAX, f64::min)
            .min(100.0)
            .floor(),
        vals.iter()
            .cloned()
            .fold(f64::MIN, f64::max)
            .max(0.0)
            .ceil(),
    );
    let (w, h) = (480usize, 300usize);
    let (mut img, to_y) = axes(w, h, lo, hi.max(lo + 1.0));
    let xs: Vec<f64> = (0..cols.len()).map(&x_of).collect();
    let (xlo, xhi) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let to_x = |x: f64| 50 + ((x - xlo) / (xhi - xlo).max(1e-9) * (w as f64 - 80.0)).round() as i64;
    for (ri, row) in rows.iter().enumerate() {
        let colour = class_colour(ri as u32);
        let mut pts: Vec<(i64, i64)> = Vec::new();
        for (c, _) in cols.iter().enumerate() {
            if only_fraction.is_some_and(|f| (frac_of(c) - f).abs() > 1e-9) {
                continue;
            }
            if let Some(v) = cells.get(&(row.clone(), c)) {
                pts.push((to_x(xs[c]), to_y(mean_sd(v).0)));
            }
        }
        pts.sort();
        for p in pts.windows(2) {
            line(&mut img, p[0], p[1], colour);
        }
        for &(x, y) in &pts {
            for d in -3..=3 {
                line(&mut img, (x - 3, y + d), (x + 3, y + d), colour);
            }
        }
    }
    io::write_png(path, &img)?;
    Ok(())
}

fn bars(path: &Path, rows: &[String], cells: &Cells) -> Result<()> {
    let vals: Vec<f64> = rows
        .iter()
        .map(|r| {
            cells
                .get(&(r.clone(), 0))
                .map(|v| mean_sd(v).0)
                .unwrap_or(0.0)
        })
        .collect();
    let hi = vals.iter().cloned().fold(1.0, f64::max).ceil();
    let (w, h) = (360usize, 260usize);
    let (mut img, to_y) = axes(w, h, 0.0, hi);
    for (i, v) in vals.iter().enumerate() {
        let x0 = 60 + i as i64 * 70;
        let y = to_y(*v);
        let colour = class_colour(i as u32);
        for x in x0..x0 + 40 {
            line(&mut img, (x, y), (x, h as i64 - 30), colour);
        }
        draw_number(
            &mut img,
            x0 + 8,
            y - 10,
            v.round() as u32,
            [0, 0, 0],
            [255, 255, 255],
        );
    }
    io::write_png(path, &img)?;
    Ok(())
}
