//! Training checkpoints on disk: written atomically (never with a non-finite tensor), the
//! two newest kept, found again on resume even when `latest.json` is damaged; and the run's
//! metrics log cut back to the checkpoint it resumes from.
use crate::config::{to_table, TrainConfig};
use crate::error::{Error, Result};
use crate::trainer::TrainState;
use candle_core::{DType, Device, Tensor};
use pupil_nn::params::{parse_header, save_tensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The checkpoint `latest.json` of a run directory names, if it can be read.
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    latest_named(&checkpoint_dir(out)).ok().flatten()
}

/// `latest.json`'s file: `Ok(None)` without one, `Err` when it cannot be read.
fn latest_named(dir: &Path) -> std::result::Result<Option<PathBuf>, String> {
    let p = dir.join("latest.json");
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: malformed: {e}", p.display()))?;
    match v["file"].as_str() {
        Some(f) if !f.contains('/') && !f.contains('\\') => Ok(Some(dir.join(f))),
        _ => Err(format!("{}: no checkpoint file named", p.display())),
    }
}

/// The `step-*.safetensors` files of a folder, newest first.
fn step_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
        })
        .collect();
    v.sort();
    v.reverse();
    v
}

/// Everything one checkpoint file holds.
pub struct Checkpoint {
    pub state: TrainState,
    pub model: HashMap<String, Tensor>,
    pub opt: BTreeMap<String, Tensor>,
    pub ema: BTreeMap<String, Tensor>,
    /// An online run's teacher (the EMA of the student it labels with).
    pub teacher: BTreeMap<String, Tensor>,
}

/// Reads a checkpoint file; errors name it.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let at = |e: &dyn std::fmt::Display| Error::msg(format!("{}: {e}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| at(&e))?;
    from_bytes(&bytes).map_err(|e| at(&e))
}

/// Parses checkpoint bytes: the state header and the tensors by their prefix.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
    let h = parse_header(bytes)?.ok_or_else(|| Error::msg("no state header"))?;
    let state: TrainState = serde_json::from_value(h).map_err(Error::msg)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    let mut c = Checkpoint {
        state,
        model: HashMap::new(),
        opt: BTreeMap::new(),
        ema: BTreeMap::new(),
        teacher: BTreeMap::new(),
    };
    for (k, v) in tensors {
        if let Some(n) = k.strip_prefix("model.") {
            c.model.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("opt.") {
            c.opt.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("ema.") {
            c.ema.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("teacher.") {
            c.teacher.insert(n.to_string(), v);
        }
    }
    Ok(c)
}

/// The checkpoint to resume from: the one `latest.json` names or, when that cannot be read,
/// the newest step file that can (said on stderr). `Ok(None)`: a fresh run.
pub fn find_resumable(out: &Path) -> Result<Option<(PathBuf, Checkpoint)>> {
    let dir = checkpoint_dir(out);
    let named = latest_named(&dir);
    let mut files = step_files(&dir);
    match &named {
        Ok(None) if files.is_empty() => return Ok(None),
        Ok(Some(p)) => match read(p) {
            Ok(c) => return Ok(Some((p.clone(), c))),
            Err(e) => eprintln!("WARNING: {e}"),
        },
        Ok(None) => eprintln!("WARNING: {}: missing", dir.join("latest.json").display()),
        Err(e) => eprintln!("WARNING: {e}"),
    }
    if let Ok(Some(p)) = &named {
        files.retain(|f| f != p);
    }
    for f in files {
        match read(&f) {
            Ok(c) => {
                eprintln!(
                    "resuming from the newest complete checkpoint, {}",
                    f.display()
                );
                return Ok(Some((f, c)));
            }
            Err(e) => eprintln!("WARNING: {e}"),
        }
    }
    Err(Error::msg(format!(
        "{}: no checkpoint can be read (see above); pass --restart to start afresh",
        dir.display()
    )))
}

/// The name of the first tensor that holds a NaN or an infinity.
fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Result<Option<String>> {
    for (n, t) in tensors {
        if !t.dtype().is_float() {
            continue;
        }
        // x - x is 0 for every finite x and NaN otherwise; its sum cannot overflow.
        #[allow(clippy::eq_op)]
        let s = (t - t)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        if !s.is_finite() {
            return Ok(Some(n.clone()));
        }
    }
    Ok(None)
}

/// Refuses to write `what` when a tensor is not finite.
pub fn ensure_finite<'a>(
    what: &Path,
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Result<()> {
    match first_non_finite(tensors)? {
        Some(n) => Err(Error::msg(format!(
            "{}: not written: tensor {n} is not finite",
            what.display()
        ))),
        None => Ok(()),
    }
}

/// Writes `step-N.safetensors` and then `latest.json`, each atomically, and keeps the two
/// newest step files. A failed write (a full disk) leaves the previous ones as they were.
pub fn write(out: &Path, state: &TrainState, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let dir = checkpoint_dir(out);
    let name = format!("step-{:07}.safetensors", state.step);
    ensure_finite(&dir.join(&name), tensors)?;
    let header = serde_json::to_value(state).map_err(Error::msg)?;
    save_tensors(&dir.join(&name), tensors, &header)?;
    let latest = serde_json::json!({ "file": name, "step": state.step });
    pupil_data::io::write_atomic(dir.join("latest.json"), latest.to_string().as_bytes())?;
    prune(&dir);
    Ok(())
}

/// Keeps the two newest step files; one that cannot be removed is left for next time.
fn prune(dir: &Path) {
    for p in step_files(dir).iter().skip(2) {
        let _ = std::fs::remove_file(p);
    }
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `key: old -> new` for every value that differs between two configs.
pub fn config_changes(old: &TrainConfig, new: &TrainConfig) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &toml::Value::Table(to_table(old)), &mut a);
    flatten("", &toml::Value::Table(to_table(new)), &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let none = "(unset)".to_string();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
            format!("{k}: {x} -> {y}")
        })
        .collect()
}

/// Cuts a metrics log back to the records of steps up to `step` (a killed run logged past
/// its checkpoint, perhaps half a line); rewritten atomically when anything goes.
pub fn trim_log(path: &Path, step: usize) -> Result<()> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::msg(format!("{}: {e}", path.display()))),
    };
    let keep = |l: &&str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["step"].as_u64())
            .is_some_and(|s| s as usize <= step)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    if kept.len() == text.lines().count() && (text.is_empty() || text.ends_with('\n')) {
        return Ok(());
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(pupil_data::io::write_atomic(path, out.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::{LossNorm, Position};

    fn state(step: usize) -> TrainState {
        TrainState {
            format: "pupil-train".into(),
            step,
            human: Position::default(),
            pseudo: Position::default(),
            noise: 1,
            loss_norm: LossNorm::default(),
            config: TrainConfig::default(),
            class_names: vec!["a".into()],
            num_outputs: 1,
            best: None,
            loss_scaler: None,
            skipped_steps: 0,
            skipped_in_row: 0,
            online: Default::default(),
        }
    }

    fn tensors(v: f32) -> BTreeMap<String, Tensor> {
        let t = Tensor::new(&[v, 1.0], &Device::Cpu).unwrap();
        BTreeMap::from([("model.w".to_string(), t)])
    }

    #[test]
    fn a_damaged_latest_json_falls_back_to_the_newest_readable_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        assert!(find_resumable(out).unwrap().is_none(), "a fresh run");
        for step in [5, 10, 15] {
            write(out, &state(step), &tensors(step as f32)).unwrap();
        }
        let files = step_files(&checkpoint_dir(out));
        assert_eq!(files.len(), 2, "the two newest are kept");
        let (p, c) = find_resumable(out).unwrap().unwrap();
        assert!(p.ends_with("step-0000015.safetensors") && c.state.step == 15);
        let latest = checkpoint_dir(out).join("latest.json");
        std::fs::write(&latest, "{\"file\": \"step-00").unwrap();
        assert_eq!(find_resumable(out).unwrap().unwrap().1.state.step, 15);
        // a damaged newest file: the one before it
        let newest = &files[0];
        let bytes = std::fs::read(newest).unwrap();
        std::fs::write(newest, &bytes[..bytes.len() / 2]).unwrap();
        let (_, c) = find_resumable(out).unwrap().unwrap();
        assert_eq!(
            (c.state.step, c.model["w"].to_vec1::<f32>().unwrap()[0]),
            (10, 10.0)
        );
        std::fs::remove_file(&files[1]).unwrap();
        let e = find_resumable(out).err().unwrap().to_string();
        assert!(e.contains("--restart"), "{e}");
    }

    #[test]
    fn non_finite_tensors_are_never_written() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &state(5), &tensors(1.0)).unwrap();
        for bad in [f32::NAN, f32::INFINITY] {
            let e = write(d.path(), &state(10), &tensors(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("model.w") && e.contains("not finite"), "{e}");
        }
        let (p, _) = find_resumable(d.path()).unwrap().unwrap();
        assert!(p.ends_with("step-0000005.safetensors"));
        assert_eq!(step_files(&checkpoint_dir(d.path())).len(), 1);
    }

    #[test]
    fn the_log_is_cut_back_to_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("metrics.jsonl");
        let lines: Vec<String> = (1..=6).map(|s| format!("{{\"step\":{s}}}")).collect();
        std::fs::write(&f, lines.join("\n") + "\n{\"step\":7,\"lo").unwrap();
        trim_log(&f, 4).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            lines[..4].join("\n") + "\n"
        );
        trim_log(&f, 4).unwrap();
        trim_log(&d.path().join("none.jsonl"), 3).unwrap();
    }

    #[test]
    fn config_changes_name_each_key() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        b.optim.steps = 80;
        b.optim.ema_decay = Some(0.9);
        assert_eq!(
            config_changes(&a, &b),
            vec![
                "optim.ema_decay: (unset) -> 0.9",
                "optim.steps: 120000 -> 80"
            ]
        );
        assert!(config_changes(&a, &a).is_empty());
    }
}
