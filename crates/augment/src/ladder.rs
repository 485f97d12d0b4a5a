//! The paper's augmentation ladder (Augment-S1..S4) and pipelines read from a config string
//! or TOML.
//!
//! String syntax: steps separated by `|`, each `name` or `name(args)`, args positional or
//! `key=value`, e.g. `lsj(0.5,2.0,size=640) | randaugment(n=2,m=10) | hflip`. Sizes are `N`
//! or `WxH`; fills are `N` or `R:G:B`.
//!
//! | step | keys (positional order) |
//! |---|---|
//! | `s1`..`s4` | `size` (640), `pad` (128), `fill` (mean) |
//! | `hflip` | `p` (0.5) |
//! | `resize` | `size` (required) |
//! | `scale_jitter` / `jitter` | `min` (0.8), `max` (1.2), `size` (640), `pad` (128), `fill` (mean) |
//! | `lsj` | as `scale_jitter`, with `min` 0.5, `max` 2.0 |
//! | `autoaugment` / `aa` | `policy` (v0) |
//! | `randaugment` / `ra` | `n` (2), `m` (10), `translate` (100), `cutout` (40), `prob` (always) |
//! | any op by TF name (`Rotate_BBox`, `Equalize`, ...) | `p` (1.0), `level` (10) |
//!
//! TOML: an array of tables `[[op]]` with `name = "..."` and the same keys, and/or a
//! top-level `pipeline = "..."` string that runs first. Unknown steps and keys are errors
//! that name the step.
use crate::autoaugment::{AutoAugment, OpKind, PolicyOp};
use crate::geometric::{HFlip, Resize, Size};
use crate::jitter::{FlipJitter, ScaleJitter, MEAN_FILL};
use crate::randaugment::RandAugment;
use crate::{Augment, Pipeline};

/// A pipeline description that could not be read; `item` names the offending step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{item}: {msg}")]
pub struct ConfigError {
    pub item: String,
    pub msg: String,
}

fn err<T>(item: &str, msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        item: item.to_string(),
        msg: msg.into(),
    })
}

/// Default output size of the ladders (the paper trains at 640x640).
pub const DEFAULT_SIZE: Size = Size::square(640);

/// Knobs of a named ladder's scale jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LadderOptions {
    pub size: Size,
    pub pad_multiple: usize,
    pub fill: [u8; 3],
    /// Multiplies AutoAugment / RandAugment pixel constants (translate, cutout), which are in
    /// pixels of the paper's 640-pixel images: `size / 640` keeps them in proportion.
    pub pixel_scale: f64,
}

impl LadderOptions {
    pub fn new(size: Size) -> Self {
        LadderOptions {
            size,
            pad_multiple: 128,
            fill: MEAN_FILL,
            pixel_scale: 1.0,
        }
    }
}

/// The named ladders: `s1` = flip + scale jitter [0.8, 1.2]; `s2` = AutoAugment v0 + `s1`;
/// `s3` = AutoAugment v0 + flip + large scale jitter [0.5, 2.0]; `s4` = RandAugment (N=2,
/// M=10) + flip + large scale jitter. Order as TF's parser: AutoAugment / RandAugment on the
/// original image, then the flip, then resize/crop/pad. `none` only resizes to fit and pads
/// (no randomness: the evaluation transform).
pub fn ladder(name: &str, size: Size) -> Result<Pipeline, ConfigError> {
    ladder_with(name, LadderOptions::new(size))
}

pub fn ladder_with(name: &str, o: LadderOptions) -> Result<Pipeline, ConfigError> {
    let jitter = |min: f64, max: f64| ScaleJitter {
        size: o.size,
        scale: (min, max),
        pad_multiple: o.pad_multiple,
        fill: o.fill,
    };
    // Flip and jitter run as one fused step (same draws, same output, one pass).
    let flip_then = |kind: &str, min: f64, max: f64| {
        let name = format!("hflip | {kind}(size={},pad={})", o.size, o.pad_multiple);
        let op = FlipJitter {
            flip_prob: 0.5,
            jitter: jitter(min, max),
        };
        (name, op)
    };
    let mut p = Pipeline::new();
    let aa = || {
        let mut a = AutoAugment::v0();
        a.hparams = a.hparams.scaled(o.pixel_scale);
        Box::new(a) as Box<dyn Augment>
    };
    let ra = || {
        let mut r = RandAugment::default();
        r.hparams = r.hparams.scaled(o.pixel_scale);
        Box::new(r) as Box<dyn Augment>
    };
    let (policy_step, (name, op)): (Option<(&str, Box<dyn Augment>)>, _) =
        match name.to_ascii_lowercase().as_str() {
            "none" => {
                let name = format!("resize(size={},pad={})", o.size, o.pad_multiple);
                p.push(name, jitter(1.0, 1.0));
                return Ok(p);
            }
            "s1" => (None, flip_then("scale_jitter", 0.8, 1.2)),
            "s2" => (
                Some(("autoaugment(v0)", aa())),
                flip_then("scale_jitter", 0.8, 1.2),
            ),
            "s3" => (Some(("autoaugment(v0)", aa())), flip_then("lsj", 0.5, 2.0)),
            "s4" => (
                Some(("randaugment(n=2,m=10)", ra())),
                flip_then("lsj", 0.5, 2.0),
            ),
            other => return err(other, "unknown ladder (expected none, s1, s2, s3 or s4)"),
        };
    if let Some((n, step)) = policy_step {
        p.push_boxed(n, step);
    }
    p.push(name, op);
    Ok(p)
}

/// A parameter value, from the string syntax (always `Str`) or from TOML.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    List(Vec<Val>),
}

impl Val {
    fn describe(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(v) => v.to_string(),
            Val::List(l) => l.iter().map(Val::describe).collect::<Vec<_>>().join(":"),
        }
    }
}

/// The arguments of one step, checked against the keys the step accepts.
struct Args<'a> {
    item: &'a str,
    values: Vec<(&'static str, Val)>,
}

impl<'a> Args<'a> {
    fn bind(
        item: &'a str,
        keys: &[&'static str],
        pos: Vec<Val>,
        named: Vec<(String, Val)>,
    ) -> Result<Self, ConfigError> {
        if pos.len() > keys.len() {
            return err(
                item,
                format!(
                    "takes at most {} positional arguments, got {}",
                    keys.len(),
                    pos.len()
                ),
            );
        }
        let mut values: Vec<(&'static str, Val)> = keys.iter().copied().zip(pos).collect();
        for (k, v) in named {
            let Some(&key) = keys.iter().find(|&&key| key == k) else {
                let expected = if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                };
                return err(item, format!("unknown key '{k}' (expected: {expected})"));
            };
            if values.iter().any(|(q, _)| *q == key) {
                return err(item, format!("'{key}' given twice"));
            }
            values.push((key, v));
        }
        Ok(Args { item, values })
    }

    fn get(&self, key: &str) -> Option<&Val> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn num(&self, v: &Val, key: &str) -> Result<f64, ConfigError> {
        match v {
            Val::Num(x) => Ok(*x),
            Val::Str(s) => s
                .trim()
                .parse::<f64>()
                .or_else(|_| err(self.item, format!("'{key}' must be a number, got '{s}'"))),
            Val::List(_) => err(self.item, format!("'{key}' must be a number, got a list")),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let v = match self.get(key) {
            Some(v) => self.num(v, key)?,
            None => default,
        };
        if !v.is_finite() {
            return err(self.item, format!("'{key}' must be finite"));
        }
        Ok(v)
    }

    fn prob_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let v = self.f64_or(key, default)?;
        if !(0.0..=1.0).contains(&v) {
            return err(
                self.item,
                format!("'{key}' must be a probability in [0, 1], got {v}"),
            );
        }
        Ok(v)
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                let x = self.num(v, key)?;
                if x < 0.0 || x.fract() != 0.0 || x > u32::MAX as f64 {
                    return err(
                        self.item,
                        format!(
                            "'{key}' must be a non-negative integer, got {}",
                            v.describe()
                        ),
                    );
                }
                Ok(x as usize)
            }
        }
    }

    fn size_or(&self, key: &str, default: Option<Size>) -> Result<Size, ConfigError> {
        let bad = |v: &Val| {
            err(
                self.item,
                format!(
                    "'{key}' must be N or WxH with positive integers, got '{}'",
                    v.describe()
                ),
            )
        };
        let v = match (self.get(key), default) {
            (Some(v), _) => v,
            (None, Some(d)) => return Ok(d),
            (None, None) => return err(self.item, format!("'{key}' is required")),
        };
        let parts: Vec<Val> = match v {
            Val::Str(s) => s
                .split(['x', 'X'])
                .map(|p| Val::Str(p.to_string()))
                .collect(),
            Val::Num(_) => vec![v.clone()],
            Val::List(l) => l.clone(),
        };
        let mut n = Vec::new();
        for p in &parts {
            match self.num(p, key) {
                Ok(x) if x >= 1.0 && x.fract() == 0.0 && x <= 1e6 => n.push(x as usize),
                _ => return bad(v),
            }
        }
        match n[..] {
            [s] => Ok(Size::square(s)),
            [w, h] => Ok(Size::new(w, h)),
            _ => bad(v),
        }
    }

    fn fill_or(&self, key: &str, default: [u8; 3]) -> Result<[u8; 3], ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let parts: Vec<Val> = match v {
            Val::Str(s) => s.split(':').map(|p| Val::Str(p.to_string())).collect(),
            Val::Num(_) => vec![v.clone()],
            Val::List(l) => l.clone(),
        };
        let mut c = Vec::new();
        for p in &parts {
            match self.num(p, key) {
                Ok(x) if (0.0..=255.0).contains(&x) && x.fract() == 0.0 => c.push(x as u8),
                _ => {
                    return err(
                        self.item,
                        format!(
                            "'{key}' must be N or R:G:B in 0..=255, got '{}'",
                            v.describe()
                        ),
                    )
                }
            }
        }
        match c[..] {
            [g] => Ok([g; 3]),
            [r, g, b] => Ok([r, g, b]),
            _ => err(
                self.item,
                format!("'{key}' must be N or R:G:B, got '{}'", v.describe()),
            ),
        }
    }

    fn str_or(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Val::Str(s)) => Ok(s.trim().to_string()),
            Some(v) => err(
                self.item,
                format!("'{key}' must be a string, got {}", v.describe()),
            ),
        }
    }
}

const JITTER_KEYS: &[&str] = &["min", "max", "size", "pad", "fill"];

fn jitter_from(a: &Args, min: f64, max: f64) -> Result<ScaleJitter, ConfigError> {
    let j = ScaleJitter {
        scale: (a.f64_or("min", min)?, a.f64_or("max", max)?),
        size: a.size_or("size", Some(DEFAULT_SIZE))?,
        pad_multiple: a.usize_or("pad", 128)?,
        fill: a.fill_or("fill", MEAN_FILL)?,
    };
    if !(j.scale.0 > 0.0 && j.scale.0 <= j.scale.1) {
        return err(
            a.item,
            format!(
                "need 0 < min <= max, got min {} max {}",
                j.scale.0, j.scale.1
            ),
        );
    }
    Ok(j)
}

/// A parsed step; a flip directly followed by a jitter is fused into [`FlipJitter`].
enum Step {
    Flip(HFlip),
    Jitter(ScaleJitter),
    Other(Box<dyn Augment>),
    Many(Pipeline),
}

#[derive(Default)]
struct Builder {
    p: Pipeline,
    flip: Option<(String, HFlip)>,
}

impl Builder {
    fn add(&mut self, label: &str, step: Step) {
        match step {
            Step::Flip(f) => {
                self.flush();
                self.flip = Some((label.to_string(), f));
            }
            Step::Jitter(j) => match self.flip.take() {
                Some((fl, f)) => self.p.push(
                    format!("{fl} | {label}"),
                    FlipJitter {
                        flip_prob: f.prob,
                        jitter: j,
                    },
                ),
                None => self.p.push(label, j),
            },
            Step::Other(op) => {
                self.flush();
                self.p.push_boxed(label, op);
            }
            Step::Many(p) => {
                self.flush();
                self.p.extend(p);
            }
        }
    }

    fn flush(&mut self) {
        if let Some((l, f)) = self.flip.take() {
            self.p.push(l, f);
        }
    }

    fn finish(mut self) -> Pipeline {
        self.flush();
        self.p
    }
}

/// Builds one step from its name and arguments and appends it.
fn add_step(
    b: &mut Builder,
    item: &str,
    label: &str,
    name: &str,
    pos: Vec<Val>,
    named: Vec<(String, Val)>,
) -> Result<(), ConfigError> {
    let lname = name.trim().to_ascii_lowercase();
    let keys: &[&'static str] = match lname.as_str() {
        "s1" | "s2" | "s3" | "s4" => &["size", "pad", "fill"],
        "hflip" | "flip" => &["p"],
        "resize" => &["size"],
        "scale_jitter" | "jitter" | "lsj" => JITTER_KEYS,
        "autoaugment" | "aa" => &["policy"],
        "randaugment" | "ra" => &["n", "m", "translate", "cutout", "prob"],
        _ if OpKind::from_name(&lname).is_some() => &["p", "level"],
        _ => return err(item, format!("unknown step '{}'", name.trim())),
    };
    let a = Args::bind(item, keys, pos, named)?;
    let step = match lname.as_str() {
        "s1" | "s2" | "s3" | "s4" => {
            let o = LadderOptions {
                size: a.size_or("size", Some(DEFAULT_SIZE))?,
                pad_multiple: a.usize_or("pad", 128)?,
                fill: a.fill_or("fill", MEAN_FILL)?,
                pixel_scale: 1.0,
            };
            Step::Many(ladder_with(&lname, o)?)
        }
        "hflip" | "flip" => Step::Flip(HFlip {
            prob: a.prob_or("p", 0.5)?,
        }),
        "resize" => Step::Other(Box::new(Resize {
            size: a.size_or("size", None)?,
        })),
        "scale_jitter" | "jitter" => Step::Jitter(jitter_from(&a, 0.8, 1.2)?),
        "lsj" => Step::Jitter(jitter_from(&a, 0.5, 2.0)?),
        "autoaugment" | "aa" => {
            let v = a.str_or("policy", "v0")?;
            match AutoAugment::new(&v) {
                Some(aa) => Step::Other(Box::new(aa)),
                None => {
                    return err(
                        item,
                        format!("unknown policy '{v}' (expected v0, v1, v2 or v3)"),
                    )
                }
            }
        }
        "randaugment" | "ra" => {
            let mut ra = RandAugment::new(a.usize_or("n", 2)?, a.f64_or("m", 10.0)?);
            ra.hparams.translate_const = a.f64_or("translate", ra.hparams.translate_const)?;
            ra.hparams.cutout_const = a.f64_or("cutout", ra.hparams.cutout_const)?;
            if a.get("prob").is_some() {
                ra.prob_to_apply = Some(a.prob_or("prob", 1.0)?);
            }
            if ra.magnitude < 0.0 {
                return err(item, "'m' must be >= 0");
            }
            Step::Other(Box::new(ra))
        }
        _ => {
            let op = OpKind::from_name(&lname).expect("checked above");
            let level = a.f64_or("level", 10.0)?;
            if level < 0.0 {
                return err(item, "'level' must be >= 0");
            }
            let prob = a.prob_or("p", 1.0)?;
            Step::Other(Box::new(PolicyOp {
                op,
                prob: prob as f32,
                level: level as f32,
            }))
        }
    };
    b.add(label, step);
    Ok(())
}

/// Reads a pipeline from the string syntax (see the module docs), e.g. `s4(size=512)` or
/// `lsj(0.5,2.0) | randaugment(n=2,m=10) | hflip`.
pub fn parse_pipeline(text: &str) -> Result<Pipeline, ConfigError> {
    let mut b = Builder::default();
    if text.trim().is_empty() {
        return err("pipeline", "empty");
    }
    for (i, raw) in text.split('|').enumerate() {
        let step = raw.trim();
        let item = format!("step {} '{}'", i + 1, step);
        if step.is_empty() {
            return err(&item, "empty step");
        }
        let (name, inner) = match step.find('(') {
            None => (step, None),
            Some(k) => {
                if !step.ends_with(')') {
                    return err(&item, "missing ')'");
                }
                (&step[..k], Some(&step[k + 1..step.len() - 1]))
            }
        };
        if name.trim().is_empty() || name.contains(')') {
            return err(&item, "expected name or name(args)");
        }
        let mut pos = Vec::new();
        let mut named = Vec::new();
        if let Some(inner) = inner.filter(|s| !s.trim().is_empty()) {
            for arg in inner.split(',') {
                let arg = arg.trim();
                if arg.is_empty() {
                    return err(&item, "empty argument");
                }
                match arg.split_once('=') {
                    Some((k, v)) => named.push((
                        k.trim().to_ascii_lowercase(),
                        Val::Str(v.trim().to_string()),
                    )),
                    None if named.is_empty() => pos.push(Val::Str(arg.to_string())),
                    None => {
                        return err(
                            &item,
                            format!("positional argument '{arg}' after key=value"),
                        )
                    }
                }
            }
        }
        add_step(&mut b, &item, step, name, pos, named)?;
    }
    Ok(b.finish())
}

fn from_toml(v: &toml::Value, item: &str, key: &str) -> Result<Val, ConfigError> {
    Ok(match v {
        toml::Value::String(s) => Val::Str(s.clone()),
        toml::Value::Integer(i) => Val::Num(*i as f64),
        toml::Value::Float(f) => Val::Num(*f),
        toml::Value::Array(a) => Val::List(
            a.iter()
                .map(|x| from_toml(x, item, key))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return err(
                item,
                format!("'{key}' has an unsupported type ({})", other.type_str()),
            )
        }
    })
}

/// Reads a pipeline from TOML: an optional `pipeline = "..."` string, then `[[op]]` tables
/// with a `name` and that step's keys.
pub fn parse_toml(text: &str) -> Result<Pipeline, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        item: "toml".into(),
        msg: e.message().to_string(),
    })?;
    let mut b = Builder::default();
    if let Some(k) = table.keys().find(|k| *k != "pipeline" && *k != "op") {
        return err(
            &format!("key '{k}'"),
            "unknown top-level key (expected 'pipeline' or [[op]])",
        );
    }
    if let Some(v) = table.get("pipeline") {
        match v.as_str() {
            Some(s) => b.add("pipeline", Step::Many(parse_pipeline(s)?)),
            None => return err("pipeline", "must be a string"),
        }
    }
    if let Some(ops) = table.get("op") {
        let Some(ops) = ops.as_array() else {
            return err("op", "must be an array of tables ([[op]])");
        };
        for (i, op) in ops.iter().enumerate() {
            let Some(t) = op.as_table() else {
                return err(&format!("op[{i}]"), "must be a table");
            };
            let name = match t.get("name").and_then(|n| n.as_str()) {
                Some(n) => n,
                None => return err(&format!("op[{i}]"), "needs name = \"...\""),
            };
            let item = format!("op[{i}] '{name}'");
            let mut named = Vec::new();
            for (k, v) in t.iter().filter(|(k, _)| *k != "name") {
                named.push((k.to_ascii_lowercase(), from_toml(v, &item, k)?));
            }
            let args: Vec<String> = named
                .iter()
                .map(|(k, v)| format!("{k}={}", v.describe()))
                .collect();
            let label = format!("{name}({})", args.join(","));
            add_step(&mut b, &item, &label, name, Vec::new(), named)?;
        }
    }
    let p = b.finish();
    if p.is_empty() {
        return err(
            "toml",
            "no steps (give pipeline = \"...\" or [[op]] tables)",
        );
    }
    Ok(p)
}
