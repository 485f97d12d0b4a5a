//! A run's training curves from its `metrics.jsonl`: loss parts, L_h and L_p with their
//! moving averages, the learning rate and the validation metrics over steps.
use super::{panels, LinePlot, Point, Series, XAxis};
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The file name of a run's plot, next to its `metrics.jsonl`.
pub const RUN_PLOT: &str = "metrics.png";

/// Records by step; a resumed run logs some steps twice and the later record wins.
#[derive(Default)]
struct Records {
    train: BTreeMap<u64, Map<String, Value>>,
    eval: BTreeMap<u64, Map<String, Value>>,
}

fn read_records(path: &Path) -> Result<Records> {
    let text = std::fs::read_to_string(path).map_err(|e| pupil_data::Error::io(path, e))?;
    let lines: Vec<(usize, &str)> = (text.lines().enumerate())
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut r = Records::default();
    for (k, &(i, line)) in lines.iter().enumerate() {
        let v: Map<String, Value> = match serde_json::from_str(line) {
            Ok(v) => v,
            // a run killed while writing leaves its last line cut
            Err(_) if k + 1 == lines.len() => continue,
            Err(e) => {
                return Err(Error::msg(format!(
                    "{}: line {}: malformed JSON: {e}",
                    path.display(),
                    i + 1
                )))
            }
        };
        let Some(step) = v.get("step").and_then(Value::as_u64) else {
            continue;
        };
        match v.get("eval") {
            Some(e @ Value::Object(_)) => {
                // either form `Metrics` reads; an evaluation it cannot read is not drawn
                let Ok(m) = crate::task::Metrics::deserialize(e) else {
                    continue;
                };
                let mut vals: Map<String, Value> =
                    m.values.into_iter().map(|(k, v)| (k, v.into())).collect();
                vals.insert("primary".into(), m.primary.into());
                r.eval.insert(step, vals);
            }
            _ if v.contains_key("loss") => {
                r.train.insert(step, v);
            }
            _ => {}
        }
    }
    Ok(r)
}

/// Keys of a training record that are parts of the loss (not counts, rates or averages).
fn is_loss_part(k: &str) -> bool {
    let other = [
        "step",
        "lr",
        "grad_norm",
        "images_per_s",
        "loss_scale",
        "skipped_overflow",
        "L_h",
        "L_p",
    ];
    !other.contains(&k) && !k.starts_with("avg_") && !k.contains("positives")
}

/// One series per key present, values times `scale`; `rename` gives the legend name.
fn series(
    recs: &BTreeMap<u64, Map<String, Value>>,
    keys: &[String],
    scale: f64,
    rename: impl Fn(&str) -> String,
) -> Vec<Series> {
    keys.iter()
        .map(|k| Series {
            name: rename(k),
            points: (recs.iter())
                .filter_map(|(s, m)| Some(Point::new(*s as f64, m.get(k)?.as_f64()? * scale, 0.0)))
                .filter(|p| p.mean.is_finite())
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn plot(title: &str, y_label: &str, series: Vec<Series>) -> Option<LinePlot> {
    (!series.is_empty()).then(|| LinePlot {
        title: title.into(),
        x_label: "step".into(),
        y_label: y_label.into(),
        x: XAxis::Numeric,
        series,
    })
}

/// The panels of a run's plot from its `metrics.jsonl`: training loss and its parts, L_h and
/// L_p with their moving averages (students), learning rate, validation metrics (%).
pub fn run_curves(metrics: &Path) -> Result<Vec<LinePlot>> {
    let r = read_records(metrics)?;
    let mut parts: Vec<String> = Vec::new();
    for m in r.train.values() {
        for k in m.keys().filter(|k| is_loss_part(k) && *k != "loss") {
            if !parts.contains(k) {
                parts.push(k.clone());
            }
        }
    }
    parts.sort();
    parts.insert(0, "loss".into());
    let norm: Vec<String> = ["L_h", "L_p", "avg_L_h", "avg_L_p"]
        .map(String::from)
        .to_vec();
    let known = ["AP", "AP50", "mIoU", "top1"];
    let mut evals: Vec<String> = known
        .iter()
        .filter(|k| r.eval.values().any(|m| m.contains_key(**k)))
        .map(|k| k.to_string())
        .collect();
    if evals.is_empty() {
        evals.push("primary".into());
    }
    let same = |k: &str| k.to_string();
    let total = |k: &str| {
        if k == "loss" {
            "total".into()
        } else {
            k.to_string()
        }
    };
    let plots: Vec<LinePlot> = [
        plot(
            "Training loss",
            "loss",
            series(&r.train, &parts, 1.0, total),
        ),
        plot(
            "Human (L_h) and pseudo (L_p) losses",
            "loss",
            series(&r.train, &norm, 1.0, same),
        ),
        plot(
            "Learning rate",
            "learning rate",
            series(&r.train, &["lr".into()], 1.0, same),
        ),
        plot(
            "Validation",
            "metric (%)",
            series(&r.eval, &evals, 100.0, same),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if plots.is_empty() {
        return Err(Error::msg(format!(
            "{}: no training or evaluation records",
            metrics.display()
        )));
    }
    Ok(plots)
}

/// Writes the plot of a run folder's `metrics.jsonl` to `out` (usually `RUN_DIR/`
/// [`RUN_PLOT`]).
pub fn run_plot(run_dir: &Path, out: &Path) -> Result<()> {
    let plots = run_curves(&run_dir.join("metrics.jsonl"))?;
    // the folder and its parent: "b7", or "round-0/student" for a self-training student
    let full = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let parts: Vec<String> = (full.components().rev().take(2))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let name = parts.into_iter().rev().collect::<Vec<_>>().join("/");
    panels(out, &format!("Training run {name}"), &plots, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_come_from_the_log_and_a_resumed_step_counts_once() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("metrics.jsonl");
        let lines = [
            r#"{"step":10,"loss":2.0,"cls":1.5,"box":0.5,"positives":3,"lr":0.1,"L_h":1.0,"L_p":2.0,"avg_L_h":1.0,"avg_L_p":2.0}"#,
            r#"{"step":20,"loss":1.5,"cls":1.0,"box":0.5,"positives":3,"lr":0.2,"L_h":0.9,"L_p":1.8,"avg_L_h":0.99,"avg_L_p":1.98}"#,
            r#"{"step":20,"loss":1.4,"cls":0.9,"box":0.5,"positives":3,"lr":0.2,"L_h":0.9,"L_p":1.8,"avg_L_h":0.99,"avg_L_p":1.98}"#,
            r#"{"step":20,"eval":{"primary":0.25,"values":{"AP":0.25,"AP50":0.5}},"final":true}"#,
            r#"{"step":30,"loss":1."#,
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let p = run_curves(&log).unwrap();
        let titles: Vec<&str> = p.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles.len(), 4, "{titles:?}");
        let names: Vec<&str> = p[0].series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["total", "box", "cls"]);
        assert_eq!(
            p[0].series[0].points.len(),
            2,
            "step 20 once; the cut line skipped"
        );
        assert_eq!(p[0].series[0].points[1].mean, 1.4, "the later record wins");
        assert_eq!(p[1].series.len(), 4);
        assert_eq!(p[3].series[0].name, "AP");
        assert_eq!(p[3].series[1].points[0].mean, 50.0);
        let out = d.path().join(RUN_PLOT);
        run_plot(d.path(), &out).unwrap();
        assert!(out.exists());

        // a broken line before the end is an error naming the file and line
        std::fs::write(
            &log,
            "{\"step\":1,\"loss\":1}\n{oops\n{\"step\":2,\"loss\":1}\n",
        )
        .unwrap();
        let e = run_curves(&log).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 2"), "{e}");
        std::fs::write(&log, "").unwrap();
        let e = run_curves(&log).unwrap_err().to_string();
        assert!(e.contains("no training"), "{e}");
    }
}
