//! Value ranges of a run config, checked before anything is built, so a bad value is an
//! error naming its key instead of a panic or an obscure failure deep in a model.
use crate::config::{SelfTrainMode, TaskKind, TrainConfig};
use crate::error::{Error, Result};
use pupil_heads::anchors::AnchorConfig;
use pupil_heads::neck::NeckConfig;

/// `key = value` must lie in `lo..=hi` (and be a number).
fn real(key: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if v.is_nan() || v < lo || v > hi {
        return Err(Error::config(format!(
            "{key} = {v}: must be between {lo} and {hi}"
        )));
    }
    Ok(())
}

/// Like [`real`], excluding `hi` (rates and decays below 1).
fn below(key: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    real(key, v, lo, hi)?;
    if v >= hi {
        return Err(Error::config(format!("{key} = {v}: must be below {hi}")));
    }
    Ok(())
}

fn int(key: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if v < lo || v > hi {
        return Err(Error::config(format!(
            "{key} = {v}: must be between {lo} and {hi}"
        )));
    }
    Ok(())
}

/// Every range of a run config.
pub fn check_config(c: &TrainConfig) -> Result<()> {
    check_optim(c)?;
    check_data(c)?;
    check_selftrain(c)?;
    check_backbone(c)?;
    check_detector(c)?;
    check_segmenter(c)
}

fn check_optim(c: &TrainConfig) -> Result<()> {
    let o = &c.optim;
    int("optim.batch_size", o.batch_size, 1, 1 << 20)?;
    real("optim.lr_per_256", o.lr_per_256, 0.0, f64::MAX)?;
    real(
        "optim.warmup_lr_per_256",
        o.warmup_lr_per_256,
        0.0,
        f64::MAX,
    )?;
    real("optim.momentum", o.momentum, 0.0, 1.0)?;
    real("optim.weight_decay", o.weight_decay, 0.0, f64::MAX)?;
    real("optim.clip_norm", o.clip_norm, 0.0, f64::MAX)?;
    for (k, &(at, m)) in o.step_points.iter().enumerate() {
        real(&format!("optim.step_points[{k}] fraction"), at, 0.0, 1.0)?;
        real(
            &format!("optim.step_points[{k}] multiplier"),
            m,
            0.0,
            f64::MAX,
        )?;
    }
    if let Some(d) = o.ema_decay {
        below("optim.ema_decay", d, 0.0, 1.0)?;
    }
    Ok(())
}

fn check_data(c: &TrainConfig) -> Result<()> {
    let (d, a) = (&c.data, &c.augment);
    let f = d.labeled_fraction;
    if f.is_nan() || f <= 0.0 || f > 1.0 {
        return Err(Error::config(format!(
            "data.labeled_fraction = {f}: must be above 0 and at most 1"
        )));
    }
    int("data.size_divisor", d.size_divisor, 1, 1024)?;
    int("data.workers", d.workers, 0, 256)?;
    int("data.digits.image_size", d.digits.image_size, 1, 4096)?;
    for (k, n) in [
        ("train", d.digits.train),
        ("unlabeled", d.digits.unlabeled),
        ("val", d.digits.val),
    ] {
        int(&format!("data.digits.{k}"), n, 0, 1 << 24)?;
    }
    int("augment.size", a.size, 32, 8192)?;
    if let Some(s) = a.pixel_scale {
        real("augment.pixel_scale", s, f64::MIN_POSITIVE, 1e3)?;
    }
    Ok(())
}

fn check_selftrain(c: &TrainConfig) -> Result<()> {
    let s = &c.selftrain;
    real("selftrain.alpha", s.alpha, 0.0, 1e6)?;
    real("selftrain.loss_avg_decay", s.loss_avg_decay, 0.0, 1.0)?;
    real("selftrain.pseudo_per_human", s.pseudo_per_human, 0.0, 64.0)?;
    real("selftrain.score_threshold", s.score_threshold, 0.0, 1.0)?;
    if let Some(v) = s.ignore_from {
        real("selftrain.ignore_from", v, 0.0, 1.0)?;
    }
    below("selftrain.drop_path", s.drop_path, 0.0, 1.0)?;
    below("selftrain.dropout", s.dropout, 0.0, 1.0)?;
    real("selftrain.student_lr_scale", s.student_lr_scale, 0.0, 1e6)?;
    int("selftrain.rounds", s.rounds, 1, 100)?;
    check_online(c)
}

/// The online teacher's keys, and what online mode cannot do.
fn check_online(c: &TrainConfig) -> Result<()> {
    let s = &c.selftrain;
    // an EMA of 0 would be the student itself, 1 would never move
    below("selftrain.ema_decay", s.ema_decay, f64::MIN_POSITIVE, 1.0)?;
    let [lo, hi] = s.weak_scale;
    real("selftrain.weak_scale[0]", lo, 0.05, 8.0)?;
    real("selftrain.weak_scale[1]", hi, lo, 8.0)?;
    int(
        "selftrain.silent_warn_steps",
        s.silent_warn_steps,
        1,
        usize::MAX,
    )?;
    if s.mode != SelfTrainMode::Online {
        return Ok(());
    }
    if c.task != TaskKind::Detection {
        return Err(Error::config(format!(
            "selftrain.mode = \"online\": the online teacher labels boxes (task = \"detection\"); task {} self-trains offline only",
            c.task.name()
        )));
    }
    if s.rounds != 1 {
        return Err(Error::config(format!(
            "selftrain.rounds = {}: an online teacher follows the student in one run; rounds are the offline teacher's",
            s.rounds
        )));
    }
    if s.burn_in_steps >= c.optim.steps {
        return Err(Error::config(format!(
            "selftrain.burn_in_steps = {}: must be below optim.steps = {} (pseudo labels would never be used)",
            s.burn_in_steps, c.optim.steps
        )));
    }
    Ok(())
}

fn check_backbone(c: &TrainConfig) -> Result<()> {
    let b = &c.backbone;
    for (k, v) in [("width", b.width), ("depth", b.depth)] {
        if let Some(v) = v {
            if v.is_nan() || v <= 0.0 || v > 16.0 {
                return Err(Error::config(format!(
                    "backbone.{k} = {v}: must be above 0 and at most 16"
                )));
            }
        }
    }
    for (k, v) in [("drop_path", b.drop_path), ("dropout", b.dropout)] {
        if let Some(v) = v {
            below(&format!("backbone.{k}"), v, 0.0, 1.0)?;
        }
    }
    int("backbone.in_channels", b.in_channels, 1, 64)
}

fn check_detector(c: &TrainConfig) -> Result<()> {
    let d = &c.detector;
    check_neck("detector.neck", &d.neck)?;
    check_anchors(&d.anchors, &d.neck)?;
    int("detector.head_convs", d.head_convs, 0, 64)?;
    int("detector.head_channels", d.head_channels, 1, 8192)?;
    real(
        "detector.match_threshold",
        d.match_threshold as f64,
        0.0,
        1.0,
    )?;
    real(
        "detector.unmatched_threshold",
        d.unmatched_threshold as f64,
        0.0,
        d.match_threshold as f64,
    )?;
    real("detector.focal_alpha", d.focal_alpha, 0.0, 1.0)?;
    real("detector.focal_gamma", d.focal_gamma, 0.0, 100.0)?;
    real(
        "detector.huber_delta",
        d.huber_delta,
        f64::MIN_POSITIVE,
        1e6,
    )?;
    real("detector.box_weight", d.box_weight, 0.0, 1e6)?;
    let p = &d.post;
    int("detector.post.pre_nms_top_k", p.pre_nms_top_k, 1, 1 << 24)?;
    real(
        "detector.post.score_threshold",
        p.score_threshold as f64,
        0.0,
        1.0,
    )?;
    real("detector.post.nms_iou", p.nms_iou as f64, 0.0, 1.0)?;
    if let Some(s) = p.soft_nms_sigma {
        real(
            "detector.post.soft_nms_sigma",
            s as f64,
            f64::MIN_POSITIVE,
            1e6,
        )?;
    }
    Ok(())
}

fn check_neck(key: &str, n: &NeckConfig) -> Result<()> {
    int(&format!("{key}.channels"), n.channels, 1, 8192)?;
    int(&format!("{key}.min_level"), n.min_level, 1, 7)?;
    int(&format!("{key}.max_level"), n.max_level, n.min_level, 7)?;
    int(&format!("{key}.repeats"), n.repeats, 0, 64)?;
    real(&format!("{key}.bn_eps"), n.bn_eps, f64::MIN_POSITIVE, 1.0)?;
    real(&format!("{key}.bn_momentum"), n.bn_momentum, 0.0, 1.0)
}

fn check_anchors(a: &AnchorConfig, n: &NeckConfig) -> Result<()> {
    if (a.min_level, a.max_level) != (n.min_level, n.max_level) {
        return Err(Error::config(format!(
            "detector.anchors levels {}..={} must be the neck's {}..={}",
            a.min_level, a.max_level, n.min_level, n.max_level
        )));
    }
    int("detector.anchors.num_scales", a.num_scales, 1, 16)?;
    if a.aspect_ratios.is_empty() || a.aspect_ratios.len() > 16 {
        return Err(Error::config(
            "detector.anchors.aspect_ratios: needs 1 to 16 ratios",
        ));
    }
    for (k, &r) in a.aspect_ratios.iter().enumerate() {
        real(
            &format!("detector.anchors.aspect_ratios[{k}]"),
            r,
            1e-3,
            1e3,
        )?;
    }
    real("detector.anchors.anchor_size", a.anchor_size, 1e-3, 1e3)
}

fn check_segmenter(c: &TrainConfig) -> Result<()> {
    let s = &c.segmenter;
    check_neck("segmenter.neck", &s.neck)?;
    if ![8, 16].contains(&s.output_stride) {
        return Err(Error::config(format!(
            "segmenter.output_stride = {}: must be 8 or 16",
            s.output_stride
        )));
    }
    int("segmenter.aspp_channels", s.aspp_channels, 1, 8192)?;
    int(
        "segmenter.decoder_low_channels",
        s.decoder_low_channels,
        1,
        8192,
    )?;
    int("segmenter.head_convs", s.head_convs, 0, 64)?;
    int("segmenter.head_channels", s.head_channels, 1, 8192)?;
    real("segmenter.bn_eps", s.bn_eps, f64::MIN_POSITIVE, 1.0)?;
    real("segmenter.bn_momentum", s.bn_momentum, 0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_config;

    fn check(sets: &[&str]) -> Result<()> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        check_config(&load_config::<TrainConfig>(None, None, &sets)?)
    }

    #[test]
    fn defaults_pass_and_bad_values_name_their_key() {
        check(&[]).unwrap();
        for (set, key) in [
            ("optim.batch_size=0", "optim.batch_size"),
            ("optim.momentum=nan", "optim.momentum"),
            ("optim.ema_decay=1.5", "optim.ema_decay"),
            ("backbone.depth=0", "backbone.depth"),
            ("detector.head_channels=0", "detector.head_channels"),
            ("detector.neck.channels=0", "detector.neck.channels"),
            ("detector.anchors.min_level=9", "detector.anchors"),
            ("augment.size=0", "augment.size"),
            ("data.labeled_fraction=0", "data.labeled_fraction"),
            ("selftrain.loss_avg_decay=2", "selftrain.loss_avg_decay"),
            ("segmenter.output_stride=4", "segmenter.output_stride"),
            ("selftrain.ema_decay=1", "selftrain.ema_decay"),
            ("selftrain.ema_decay=0", "selftrain.ema_decay"),
            ("selftrain.weak_scale=[1.2, 0.8]", "selftrain.weak_scale[1]"),
            ("selftrain.weak_scale=[0, 1]", "selftrain.weak_scale[0]"),
            (
                "selftrain.silent_warn_steps=0",
                "selftrain.silent_warn_steps",
            ),
        ] {
            let e = check(&[set]).unwrap_err().to_string();
            assert!(e.contains(key), "{set}: {e}");
        }
    }

    #[test]
    fn online_mode_is_detection_in_one_round_with_a_burn_in_below_the_steps() {
        let on = "selftrain.mode=online";
        check(&[on, "optim.steps=100", "selftrain.burn_in_steps=99"]).unwrap();
        for (sets, key) in [
            (
                vec![on, "optim.steps=100", "selftrain.burn_in_steps=100"],
                "selftrain.burn_in_steps",
            ),
            (vec![on, "task=segmentation"], "task segmentation"),
            (vec![on, "selftrain.rounds=2"], "selftrain.rounds"),
        ] {
            let e = check(&sets).unwrap_err().to_string();
            assert!(e.contains(key), "{sets:?}: {e}");
        }
        // the offline defaults do not care about the burn-in
        check(&["optim.steps=10", "selftrain.burn_in_steps=50"]).unwrap();
        let e = check(&["selftrain.mode=ofline"]).unwrap_err().to_string();
        assert!(e.contains("ofline"), "{e}");
    }
}
