//! The experiment's report: the paper-style table (mean and spread over seeds), every
//! self-training arm against its compute-matched control with per-seed paired gains, the
//! offline teacher against the online one where the grid has both, the paper's three
//! findings tested on the numbers, CSV, results.json, and plots.
use crate::error::Result;
use crate::grid::{ArmResult, ExperimentConfig, Role, Students};
use crate::plots::{self, Bar, BarChart, LinePlot, Point, Series, XAxis};
use pupil_data::io;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// A readable name of an init.
pub fn init_label(init: &str) -> String {
    match init {
        "random" => "Rand init".into(),
        "fashion" | "pretrained" => "Fashion-MNIST init".into(),
        "digit-pool" => "Digit-pool init".into(),
        other => format!("{} init", other.trim_start_matches("pretrained:")),
    }
}

fn row_name(r: &ArmResult) -> String {
    let role = match r.role {
        Role::Supervised => "",
        Role::SelfTraining => " + self-training",
        Role::Control => " + control",
        Role::Online => " + online self-training",
    };
    format!("{}{role}", init_label(&r.init))
}

/// The arms of a grid by (init, augment, fraction, seed, role).
struct Index<'a> {
    arms: BTreeMap<(String, String, u64, u64, Role), &'a ArmResult>,
    exp: &'a ExperimentConfig,
}

fn frac_key(f: f64) -> u64 {
    (f * 1e6).round() as u64
}

impl<'a> Index<'a> {
    fn new(exp: &'a ExperimentConfig, results: &'a [ArmResult]) -> Self {
        let arms = results
            .iter()
            .map(|r| {
                let k = (
                    r.init.clone(),
                    r.augment.clone(),
                    frac_key(r.labeled_fraction),
                    r.seed,
                    r.role,
                );
                (k, r)
            })
            .collect();
        Index { arms, exp }
    }

    /// The metric (in percent) of an arm.
    fn value(&self, init: &str, aug: &str, f: f64, seed: u64, role: Role) -> Option<f64> {
        let k = (init.to_string(), aug.to_string(), frac_key(f), seed, role);
        self.arms.get(&k).map(|r| 100.0 * r.metrics.primary)
    }

    /// Per-seed differences `a - b` over the seeds where both exist.
    fn paired(&self, a: (&str, Role), b: (&str, Role), aug: &str, f: f64) -> Vec<f64> {
        (self.exp.seeds.iter())
            .filter_map(|&s| {
                let x = self.value(a.0, aug, f, s, a.1)?;
                let y = self.value(b.0, aug, f, s, b.1)?;
                Some(x - y)
            })
            .collect()
    }

    fn values(&self, init: &str, aug: &str, f: f64, role: Role) -> Vec<f64> {
        (self.exp.seeds.iter())
            .filter_map(|&s| self.value(init, aug, f, s, role))
            .collect()
    }
}

fn fmt_ms(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let (m, sd) = mean_sd(v);
    if v.len() > 1 {
        format!("{m:.1} ± {sd:.1}")
    } else {
        format!("{m:.1}")
    }
}

fn fmt_gain(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let (m, sd) = mean_sd(v);
    let seeds: Vec<String> = v.iter().map(|x| format!("{x:+.1}")).collect();
    if v.len() > 1 {
        format!("{m:+.1} ± {sd:.1} ({})", seeds.join(", "))
    } else {
        format!("{m:+.1}")
    }
}

fn col_name(aug: &str, f: f64) -> String {
    format!("{} {:.0}%", aug.to_uppercase(), f * 100.0)
}

/// The paper-style table: one row per (init, role), one column per (augment, fraction).
fn main_table(ix: &Index, results: &[ArmResult]) -> String {
    let exp = ix.exp;
    let mut rows: Vec<(String, Role, String)> = Vec::new();
    for r in results {
        let key = (r.init.clone(), r.role, row_name(r));
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    let metric = exp.base.task.metric();
    let mut md = format!("| Setup ({metric}, mean ± sd over seeds) |");
    for a in &exp.augment {
        for &f in &exp.labeled_fractions {
            md += &format!(" {} |", col_name(a, f));
        }
    }
    md += "\n|---|";
    md += &"---:|".repeat(exp.augment.len() * exp.labeled_fractions.len());
    md += "\n";
    for (init, role, name) in &rows {
        md += &format!("| {name} |");
        for a in &exp.augment {
            for &f in &exp.labeled_fractions {
                md += &format!(" {} |", fmt_ms(&ix.values(init, a, f, *role)));
            }
        }
        md += "\n";
    }
    md
}

/// Every self-training arm against its control and its teacher, per cell.
fn st_table(ix: &Index, results: &[ArmResult]) -> String {
    let exp = ix.exp;
    // a segmentation teacher writes one label map per image, scored pixel by pixel
    let (count, pr) = match exp.base.task {
        crate::config::TaskKind::Segmentation => ("Label maps / image", "Pixel P / R"),
        _ => ("Pseudo boxes / image", "Pseudo P / R"),
    };
    let mut md = format!(
        "| Init | Augment | Labeled | Supervised | Control | Self-training | ST - control (per seed) | ST - supervised | {count} | {pr} |\n|---|---|---:|---:|---:|---:|---|---|---:|---|\n",
    );
    for init in &exp.inits {
        for a in &exp.augment {
            for &f in &exp.labeled_fractions {
                let st = ix.values(init, a, f, Role::SelfTraining);
                if st.is_empty() {
                    continue;
                }
                let gain_c = ix.paired((init, Role::SelfTraining), (init, Role::Control), a, f);
                let gain_s = ix.paired((init, Role::SelfTraining), (init, Role::Supervised), a, f);
                let (per_img, pr) = pseudo_cells(results, init, a, f);
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0}% | {} | {} | {} | {} | {} | {per_img} | {pr} |",
                    init_label(init),
                    a.to_uppercase(),
                    f * 100.0,
                    fmt_ms(&ix.values(init, a, f, Role::Supervised)),
                    fmt_ms(&ix.values(init, a, f, Role::Control)),
                    fmt_ms(&st),
                    fmt_gain(&gain_c),
                    fmt_gain(&gain_s),
                );
            }
        }
    }
    md
}

/// Mean pseudo labels per image and mean precision / recall at the threshold of a cell's
/// self-training arms.
fn pseudo_cells(results: &[ArmResult], init: &str, a: &str, f: f64) -> (String, String) {
    role_pseudo_cells(results, Role::SelfTraining, init, a, f)
}

/// [`pseudo_cells`] of the arms of one role (offline or online students).
fn role_pseudo_cells(
    results: &[ArmResult],
    role: Role,
    init: &str,
    a: &str,
    f: f64,
) -> (String, String) {
    let ps: Vec<_> = results
        .iter()
        .filter(|r| r.role == role && r.init == init && r.augment == a)
        .filter(|r| frac_key(r.labeled_fraction) == frac_key(f))
        .filter_map(|r| r.pseudo.as_ref())
        .collect();
    if ps.is_empty() {
        return ("-".into(), "-".into());
    }
    let per: Vec<f64> = ps
        .iter()
        .map(|p| p.labels as f64 / p.images.max(1) as f64)
        .collect();
    let p: Vec<f64> = ps.iter().filter_map(|p| p.precision).collect();
    let r: Vec<f64> = ps.iter().filter_map(|p| p.recall).collect();
    let pr = if p.is_empty() {
        "-".into()
    } else {
        format!("{:.2} / {:.2}", mean_sd(&p).0, mean_sd(&r).0)
    };
    (format!("{:.2}", mean_sd(&per).0), pr)
}

/// A cell's arms of one role, in seed order.
fn cell_arms<'a>(ix: &Index<'a>, role: Role, init: &str, a: &str, f: f64) -> Vec<&'a ArmResult> {
    (ix.exp.seeds.iter())
        .filter_map(|&s| {
            let k = (init.to_string(), a.to_string(), frac_key(f), s, role);
            ix.arms.get(&k).copied()
        })
        .collect()
}

/// The offline and the online student of every cell with both, against each other and the
/// control they share, with the online run's EMA teacher and what each teacher emitted.
fn online_table(ix: &Index, results: &[ArmResult]) -> String {
    let exp = ix.exp;
    let mut md = String::from(
        "| Init | Augment | Labeled | Control | Offline student | Online student | Online EMA teacher | Online - offline (per seed) | Offline - control | Online - control | Labels / image (offline / online) | Label P / R (offline; online) |\n|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---|\n",
    );
    for init in &exp.inits {
        for a in &exp.augment {
            for &f in &exp.labeled_fractions {
                let on = ix.values(init, a, f, Role::Online);
                if on.is_empty() {
                    continue;
                }
                let pair = |x: Role, y: Role| ix.paired((init, x), (init, y), a, f);
                let teacher: Vec<f64> = cell_arms(ix, Role::Online, init, a, f)
                    .iter()
                    .filter_map(|r| r.ema_teacher.as_ref().map(|m| 100.0 * m.primary))
                    .collect();
                let (off_n, off_pr) = role_pseudo_cells(results, Role::SelfTraining, init, a, f);
                let (on_n, on_pr) = role_pseudo_cells(results, Role::Online, init, a, f);
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0}% | {} | {} | {} | {} | {} | {} | {} | {off_n} / {on_n} | {off_pr}; {on_pr} |",
                    init_label(init),
                    a.to_uppercase(),
                    f * 100.0,
                    fmt_ms(&ix.values(init, a, f, Role::Control)),
                    fmt_ms(&ix.values(init, a, f, Role::SelfTraining)),
                    fmt_ms(&on),
                    fmt_ms(&teacher),
                    fmt_gain(&pair(Role::Online, Role::SelfTraining)),
                    fmt_gain(&pair(Role::SelfTraining, Role::Control)),
                    fmt_gain(&pair(Role::Online, Role::Control)),
                );
            }
        }
    }
    md
}

/// Whether paired differences are resolved by their seeds: their mean is more than two
/// standard errors from zero.
fn resolved(d: &[f64]) -> &'static str {
    let (m, sd) = mean_sd(d);
    match d.len() {
        0 | 1 => "one seed: no spread to judge it by",
        n if m.abs() > 2.0 * sd / (n as f64).sqrt() => "beyond two standard errors",
        _ => "within two standard errors of zero: not resolved by these seeds",
    }
}

/// Which teacher's student wins in each cell, and over the grid, from the paired
/// differences.
fn online_verdict(ix: &Index) -> String {
    let exp = ix.exp;
    let (mut on, mut off, mut tie) = (0, 0, 0);
    let mut lines = String::new();
    for init in &exp.inits {
        for a in &exp.augment {
            for &f in &exp.labeled_fractions {
                let d = ix.paired((init, Role::Online), (init, Role::SelfTraining), a, f);
                if d.is_empty() {
                    continue;
                }
                let m = mean_sd(&d).0;
                let favour = d.iter().filter(|&&x| x > 0.0).count();
                let who = if m > 0.0 {
                    on += 1;
                    format!("the online teacher's student wins by {m:.1} points")
                } else if m < 0.0 {
                    off += 1;
                    format!("the offline teacher's student wins by {:.1} points", -m)
                } else {
                    tie += 1;
                    "the two students tie".to_string()
                };
                let gain = |r: Role| fmt_gain(&ix.paired((init, r), (init, Role::Control), a, f));
                let _ = writeln!(
                    lines,
                    "- {} {}: {who} ({favour} of {} seeds favour online; {}). Against the control: offline {}, online {}.",
                    init_label(init),
                    col_name(a, f),
                    d.len(),
                    resolved(&d),
                    gain(Role::SelfTraining),
                    gain(Role::Online),
                );
            }
        }
    }
    let cells = on + off + tie;
    if cells == 0 {
        return "No cell has both an offline and an online student with results.\n".into();
    }
    let mut s = format!(
        "Over {cells} cell(s) the online teacher's student wins in {on} and the offline teacher's in {off}"
    );
    if tie > 0 {
        s += &format!(" ({tie} tied)");
    }
    s + ":\n\n" + &lines
}

/// How the two teachers differ, from the config.
fn online_setup(exp: &ExperimentConfig) -> String {
    let (b, st) = (&exp.base, &exp.base.selftrain);
    let start = match st.burn_in_steps {
        0 => "from the student's first step (no burn-in)".to_string(),
        n => {
            format!("from the end of a burn-in of {n} supervised steps (human-labeled images only)")
        }
    };
    format!(
        "Both students start where `selftrain.student_init = \"{}\"` puts them, train the same steps on as many images per step and share the control. The offline teacher is the cell's supervised arm; it labels the unlabeled images once, at scales {:?}{}. The online teacher is the exponential moving average of its student (decay {}) {start}; it labels every unlabeled batch on a weak view (the whole image at {}-{} times the size{}) and its boxes are moved onto the student's augmented view. Thresholds ({}; ignored from {}) and the loss normalization are the same. The online arm's EMA teacher is scored too; the students are compared at equal steps. An online step costs one more forward pass (the teacher's).\n\n",
        st.student_init,
        // the offline student's config keeps these (mode_config resets the online keys)
        st.scales(b.task),
        if st.teacher_flip { " and mirrored" } else { "" },
        st.ema_decay,
        st.weak_scale[0],
        st.weak_scale[1],
        if st.weak_flip { ", mirrored at random" } else { "" },
        st.score_threshold,
        st.ignore_from.map_or("-".into(), |v| v.to_string()),
    )
}

/// Finding (a): self-training against its control in every cell.
fn finding_a(ix: &Index) -> String {
    let exp = ix.exp;
    let (mut cells, mut won, mut seeds, mut seeds_won) = (0, 0, 0, 0);
    let mut lost = Vec::new();
    for init in &exp.inits {
        for a in &exp.augment {
            for &f in &exp.labeled_fractions {
                let g = ix.paired((init, Role::SelfTraining), (init, Role::Control), a, f);
                if g.is_empty() {
                    continue;
                }
                cells += 1;
                seeds += g.len();
                seeds_won += g.iter().filter(|&&x| x > 0.0).count();
                if mean_sd(&g).0 > 0.0 {
                    won += 1;
                } else {
                    lost.push(format!(
                        "{} {} ({})",
                        init_label(init),
                        col_name(a, f),
                        fmt_gain(&g)
                    ));
                }
            }
        }
    }
    if cells == 0 {
        return "(a) Self-training vs its control: no self-training arm with a control in this grid.\n".into();
    }
    let verdict = if won == cells {
        "holds"
    } else {
        "does not hold everywhere"
    };
    let mut s = format!(
        "(a) Self-training gains over its compute-matched control at every augmentation and labeled fraction: **{verdict}**. The mean paired gain is positive in {won} of {cells} cells; per seed, {seeds_won} of {seeds} student-control pairs favour the student."
    );
    if !lost.is_empty() {
        s += &format!(" Cells where it did not: {}.", lost.join("; "));
    }
    s + "\n"
}

/// Finding (b): pre-training's gain over random init as augmentation and labeled data grow.
fn finding_b(ix: &Index) -> String {
    let exp = ix.exp;
    let inits: Vec<&String> = exp.inits.iter().filter(|i| *i != "random").collect();
    if inits.is_empty() || !exp.inits.iter().any(|i| i == "random") {
        return "(b) Pre-training vs random init: the grid lacks a random and a pre-trained init.\n".into();
    }
    let mut s = String::from(
        "(b) Pre-training's gain over random init (supervised arms, per-seed paired):\n\n",
    );
    s += "| Init | Labeled |";
    for a in &exp.augment {
        s += &format!(" {} |", a.to_uppercase());
    }
    s += "\n|---|---:|";
    s += &"---|".repeat(exp.augment.len());
    s += "\n";
    let (mut aug_checks, mut aug_falls, mut frac_checks, mut frac_falls) = (0, 0, 0, 0);
    let gain = |init: &str, a: &str, f: f64| {
        ix.paired((init, Role::Supervised), ("random", Role::Supervised), a, f)
    };
    for init in &inits {
        for &f in &exp.labeled_fractions {
            s += &format!("| {} | {:.0}% |", init_label(init), f * 100.0);
            for a in &exp.augment {
                s += &format!(" {} |", fmt_gain(&gain(init, a, f)));
            }
            s += "\n";
            let (first, last) = (&exp.augment[0], &exp.augment[exp.augment.len() - 1]);
            let (g0, g1) = (gain(init, first, f), gain(init, last, f));
            if exp.augment.len() > 1 && !g0.is_empty() && !g1.is_empty() {
                aug_checks += 1;
                aug_falls += (mean_sd(&g1).0 < mean_sd(&g0).0) as usize;
            }
        }
        for a in &exp.augment {
            let fs = &exp.labeled_fractions;
            let (g0, g1) = (gain(init, a, fs[0]), gain(init, a, fs[fs.len() - 1]));
            if fs.len() > 1 && !g0.is_empty() && !g1.is_empty() {
                frac_checks += 1;
                frac_falls += (mean_sd(&g1).0 < mean_sd(&g0).0) as usize;
            }
        }
    }
    let verdict = |k: usize, n: usize| match (k, n) {
        (_, 0) => "not tested".to_string(),
        (k, n) if k == n => format!("**holds** ({k} of {n})"),
        (k, n) => format!("**does not hold everywhere** ({k} of {n})"),
    };
    s += &format!(
        "\nThe gain falls from the weakest to the strongest augmentation: {}; it falls from the smallest to the largest labeled fraction: {}.\n",
        verdict(aug_falls, aug_checks),
        verdict(frac_falls, frac_checks)
    );
    s
}

/// Finding (c): self-training on top of a pre-trained init.
fn finding_c(ix: &Index) -> String {
    let exp = ix.exp;
    let (mut cells, mut won_c, mut won_s) = (0, 0, 0);
    for init in exp.inits.iter().filter(|i| *i != "random") {
        for a in &exp.augment {
            for &f in &exp.labeled_fractions {
                let gc = ix.paired((init, Role::SelfTraining), (init, Role::Control), a, f);
                let gs = ix.paired((init, Role::SelfTraining), (init, Role::Supervised), a, f);
                if gs.is_empty() {
                    continue;
                }
                cells += 1;
                won_s += (mean_sd(&gs).0 > 0.0) as usize;
                won_c += (!gc.is_empty() && mean_sd(&gc).0 > 0.0) as usize;
            }
        }
    }
    if cells == 0 {
        return "(c) Self-training on top of pre-training: no pre-trained self-training arm in this grid.\n".into();
    }
    let verdict = if won_c == cells {
        "holds"
    } else {
        "does not hold everywhere"
    };
    format!(
        "(c) Self-training adds on top of pre-training: **{verdict}**. With a pre-trained init the student beats its control in {won_c} of {cells} cells and its pre-trained teacher in {won_s} of {cells} (numbers in the table above).\n"
    )
}

/// Writes results.json, results.csv, report.md and the plots; returns the main table.
pub fn write(
    out: &Path,
    exp: &ExperimentConfig,
    results: &[ArmResult],
    wall: Option<f64>,
) -> Result<String> {
    io::write_json_atomic(out.join("results.json"), &results)?;
    io::write_atomic(out.join("results.csv"), csv(results).as_bytes())?;
    let ix = Index::new(exp, results);
    let md = main_table(&ix, results);
    let mut report = String::from("# pupil experiment\n\n");
    report += &setup_text(exp, results, wall);
    let planned = crate::grid::Plan::new(exp)?.arms().count();
    if results.len() < planned {
        report += &format!(
            "\n**Partial grid**: {} of the {planned} planned arms have finished; the others are blank below and the findings use only the finished ones.\n",
            results.len()
        );
    }
    report += "\n## Results\n\n";
    report += &md;
    if results.iter().any(|r| r.role == Role::SelfTraining) {
        report += "\n## Self-training against its control\n\nGains in points; per-seed paired differences in parentheses. The control trains from the student's init for the student's steps on as many images per step, all human-labeled, so the difference is what the pseudo labels bring.\n\n";
        report += &st_table(&ix, results);
    }
    if results.iter().any(|r| r.role == Role::Online) {
        report += "\n## Offline vs online teacher\n\nPoints; per-seed paired differences in parentheses. ";
        report += &online_setup(exp);
        report += &online_table(&ix, results);
        report += "\n";
        report += &online_verdict(&ix);
    }
    report += "\n## Findings\n\n";
    for f in [finding_a(&ix), finding_b(&ix), finding_c(&ix)] {
        report += &f;
        report += "\n";
    }
    report += &plots(out, exp, results)?;
    io::write_atomic(out.join("report.md"), report.as_bytes())?;
    Ok(md)
}

fn csv(results: &[ArmResult]) -> String {
    let mut csv = String::from("name,init,role,self_training,augment,labeled_fraction,seed,steps,images_seen,metric,AP50,control,seconds,mode\n");
    for r in results {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{:.6},{:.6},{},{:.1},{}",
            r.name,
            r.init,
            r.role.name(),
            r.self_training,
            r.augment,
            r.labeled_fraction,
            r.seed,
            r.steps,
            r.images_seen,
            r.metrics.primary,
            r.metrics.values.get("AP50").copied().unwrap_or(f64::NAN),
            r.control.as_deref().unwrap_or(""),
            r.seconds,
            r.mode.map_or("", |m| m.name()),
        );
    }
    csv
}

/// The supervised steps: one number, or one per (augmentation, fraction).
fn steps_text(exp: &ExperimentConfig) -> String {
    if exp.labeled_steps.is_empty() && exp.augment_steps_factor.is_empty() {
        return exp.base.optim.steps.to_string();
    }
    let mut per = Vec::new();
    for a in &exp.augment {
        for &f in &exp.labeled_fractions {
            let s = crate::grid::supervised_steps(exp, a, f);
            per.push(format!("{s} at {}", col_name(a, f)));
        }
    }
    per.join(", ")
}

fn setup_text(exp: &ExperimentConfig, results: &[ArmResult], wall: Option<f64>) -> String {
    let b = &exp.base;
    let st = &b.selftrain;
    let compute: f64 = results.iter().map(|r| r.seconds).sum();
    let opt = |v: Option<f64>| v.map_or("default".to_string(), |v| v.to_string());
    let mut s = format!(
        "Task: {}; backbone {} (width {}, depth {}); {} px; {} supervised steps of {} images; {} seed(s); metric {} in percent.\n\n",
        b.task.name(), b.backbone.name, opt(b.backbone.width), opt(b.backbone.depth), b.augment.size,
        steps_text(exp), b.optim.batch_size, exp.seeds.len(), b.task.metric()
    );
    if exp.self_training.contains(&Students::Offline) {
        s += &format!(
            "Self-training: the supervised arm is the teacher; the student starts from `{}` (`init` = the arm's own init), trains {} times the teacher's steps on {} human + {} pseudo-labeled images a step with stochastic depth {}, dropout {}, augmentation {}, learning rate x{}; pseudo labels at score {} (teacher boxes in [{}, {}) ignored), teacher scales {:?}; loss {} with alpha {} (moving-average decay {}).\n\n",
            st.student_init,
            (exp.student_steps_factor * 1000.0).round() / 1000.0,
            b.optim.batch_size,
            crate::trainer::batch_sizes(b, 1).1,
            st.drop_path, st.dropout,
            st.student_augment.as_deref().unwrap_or("as the arm"),
            st.student_lr_scale, st.score_threshold,
            st.ignore_from.map_or("-".into(), |v| v.to_string()), st.score_threshold,
            st.scales(b.task),
            if st.normalize_loss { "normalized" } else { "plain L_h + alpha L_p" },
            st.alpha, st.loss_avg_decay,
        );
    }
    s += &format!(
        "Compute: {:.0} s of training over {} arms",
        compute,
        results.len()
    );
    if let Some(w) = wall {
        s += &format!(", {w:.0} s of wall time for this invocation");
    }
    s + ".\n"
}

/// The plots of a grid with more than one augmentation or fraction; the Markdown that
/// shows them.
fn plots(out: &Path, exp: &ExperimentConfig, results: &[ArmResult]) -> Result<String> {
    let mut cols: Vec<(String, f64)> = Vec::new();
    for a in &exp.augment {
        for &f in &exp.labeled_fractions {
            cols.push((a.clone(), f));
        }
    }
    let mut rows: Vec<String> = Vec::new();
    let mut cells: Cells = BTreeMap::new();
    for r in results {
        let name = row_name(r);
        if !rows.contains(&name) {
            rows.push(name.clone());
        }
        if let Some(c) = cols
            .iter()
            .position(|c| c.0 == r.augment && frac_key(c.1) == frac_key(r.labeled_fraction))
        {
            cells
                .entry((name, c))
                .or_default()
                .push(100.0 * r.metrics.primary);
        }
    }
    write_plots(out, exp, &rows, &cells, &cols)
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
    let spread = |keep: &dyn Fn(&(String, f64)) -> bool| -> String {
        let n = finished(rows, cells, cols, keep);
        match (n.iter().min(), n.iter().max()) {
            (Some(&lo), Some(&hi)) if hi > 1 && lo == hi => format!(", mean ± sd over {hi} seeds"),
            (Some(&lo), Some(&hi)) if hi > 1 => format!(", mean ± sd over {lo}-{hi} seeds"),
            _ => String::new(),
        }
    };
    let (plot_frac, plot_aug) = plot_slices(exp, rows, cells, cols);
    let y_label = format!("{metric} (%)");
    let mut md = String::new();
    if exp.augment.len() > 1 {
        let augs: Vec<String> = exp.augment.iter().map(|a| a.to_uppercase()).collect();
        let plot = LinePlot {
            title: format!(
                "{metric} vs augmentation ({:.0}% labeled{})",
                plot_frac * 100.0,
                spread(&|c| (c.1 - plot_frac).abs() < 1e-9)
            ),
            x_label: "augmentation strength".into(),
            y_label: y_label.clone(),
            series: setup_series(rows, cells, cols.len(), |c| {
                let (a, f) = &cols[c];
                ((f - plot_frac).abs() < 1e-9)
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
                "{metric} vs labeled data ({}{})",
                plot_aug.to_uppercase(),
                spread(&|c| c.0 == plot_aug)
            ),
            x_label: "labeled data (%)".into(),
            y_label: y_label.clone(),
            series: setup_series(rows, cells, cols.len(), |c| {
                (cols[c].0 == plot_aug).then(|| cols[c].1 * 100.0)
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
                "{metric} per setup ({}, {:.0}% labeled{})",
                plot_aug.to_uppercase(),
                plot_frac * 100.0,
                spread(&|_| true)
            ),
            value_label: y_label,
            bars,
        };
        plots::bar_chart(&out.join("plot_arms.png"), &chart)?;
        md += "\n![metric per setup](plot_arms.png)\n";
    }
    Ok(md)
}

/// The seeds behind each finished cell of the columns `keep` takes.
fn finished(
    rows: &[String],
    cells: &Cells,
    cols: &[(String, f64)],
    keep: &dyn Fn(&(String, f64)) -> bool,
) -> Vec<usize> {
    (0..cols.len())
        .filter(|&c| keep(&cols[c]))
        .flat_map(|c| rows.iter().filter_map(move |r| cells.get(&(r.clone(), c))))
        .map(|v| v.len())
        .collect()
}

/// The labeled fraction the augmentation plot is drawn at and the augmentation the fraction
/// plot is drawn at: the slice with the most finished cells, the last on ties (for a whole
/// grid the largest fraction and the strongest augmentation). On a partial grid the last
/// slice may hold a single column, which says nothing about the axis.
fn plot_slices(
    exp: &ExperimentConfig,
    rows: &[String],
    cells: &Cells,
    cols: &[(String, f64)],
) -> (f64, String) {
    let count = |keep: &dyn Fn(&(String, f64)) -> bool| finished(rows, cells, cols, keep).len();
    let frac = exp
        .labeled_fractions
        .iter()
        .copied()
        .max_by_key(|&f| count(&|c| (c.1 - f).abs() < 1e-9))
        .unwrap_or(1.0);
    let aug = exp
        .augment
        .iter()
        .max_by_key(|&a| count(&|c| &c.0 == a))
        .cloned()
        .unwrap_or_default();
    (frac, aug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_of_a_partial_grid_are_drawn_where_the_cells_are() {
        let exp = ExperimentConfig {
            augment: vec!["s1".into(), "s4".into()],
            labeled_fractions: vec![0.2, 1.0],
            ..Default::default()
        };
        let cols: Vec<(String, f64)> = ["s1", "s4"]
            .iter()
            .flat_map(|a| [0.2, 1.0].map(|f| (a.to_string(), f)))
            .collect();
        let rows = vec!["Rand init".to_string(), "Rand init + control".to_string()];
        let mut cells = Cells::new();
        // S1 at 20 % and 100 %, S4 at 20 % only (columns: s1/0.2, s1/1, s4/0.2, s4/1)
        for r in &rows {
            for c in [0, 1, 2] {
                cells.insert((r.clone(), c), vec![1.0, 2.0, 3.0]);
            }
        }
        assert_eq!(
            plot_slices(&exp, &rows, &cells, &cols),
            (0.2, "s1".to_string())
        );
        // the whole grid: the last slice of each axis, as before
        for r in &rows {
            cells.insert((r.clone(), 3), vec![1.0]);
        }
        assert_eq!(
            plot_slices(&exp, &rows, &cells, &cols),
            (1.0, "s4".to_string())
        );
        let n = finished(&rows, &cells, &cols, &|c| c.1 == 1.0);
        assert_eq!((n.iter().min(), n.iter().max()), (Some(&1), Some(&3)));
    }
}
