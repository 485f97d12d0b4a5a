//! Parameters: a named store of candle `Var`s with a kind per tensor (kernel, bias, norm,
//! buffer), deterministic initialisation from (seed, name), strict checkpoint loading with a
//! report of missing / unexpected / wrong-shape tensors, and pupil's own checkpoints
//! (safetensors + a JSON header).
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use pupil_ops::dist::Collective;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// What a tensor is, for weight decay and freezing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// Conv / linear weights: the only tensors the paper applies weight decay to.
    Kernel,
    /// Conv / linear biases.
    Bias,
    /// Normalisation scale and shift.
    Norm,
    /// Running statistics: saved and loaded, never trained.
    Buffer,
}

impl ParamKind {
    pub fn trainable(self) -> bool {
        self != ParamKind::Buffer
    }
}

/// How a new tensor is filled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Const(f64),
    Normal {
        mean: f64,
        std: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// He normal over fan-out (`fan_out = out_ch * kh * kw / groups`), as timm and torchvision
    /// initialise convolutions.
    KaimingFanOut,
    /// He uniform over fan-in with a = sqrt(5), PyTorch's default for linear layers.
    KaimingUniformFanIn,
}

/// A small deterministic generator (pupil-data's SplitMix64) so initial values depend only
/// on (seed, tensor name), never on creation order or thread timing.
#[derive(Clone, Debug)]
pub struct InitRng(u64);

impl InitRng {
    pub fn new(seed: u64, name: &str) -> Self {
        let mut h = seed ^ 0x243F_6A88_85A3_08D3;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        InitRng(h)
    }
    pub fn next_u64(&mut self) -> u64 {
        pupil_data::rng::splitmix64(&mut self.0)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn fill(init: Init, shape: &Shape, rng: &mut InitRng) -> Vec<f32> {
    let n = shape.elem_count();
    let dims = shape.dims();
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Normal { mean, std } => (0..n).map(|_| (mean + std * rng.normal()) as f32).collect(),
        Init::Uniform { lo, hi } => (0..n)
            .map(|_| (lo + (hi - lo) * rng.uniform()) as f32)
            .collect(),
        Init::KaimingFanOut => {
            // dims = [out, in/groups, kh, kw]; groups folded in by the caller's shape.
            let fan_out =
                dims.first().copied().unwrap_or(1) * dims.iter().skip(2).product::<usize>();
            let std = (2.0 / fan_out.max(1) as f64).sqrt();
            (0..n).map(|_| (std * rng.normal()) as f32).collect()
        }
        Init::KaimingUniformFanIn => {
            let fan_in = dims.iter().skip(1).product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|_| (bound * (2.0 * rng.uniform() - 1.0)) as f32)
                .collect()
        }
    }
}

struct Entry {
    var: Var,
    kind: ParamKind,
}

struct Inner {
    vars: BTreeMap<String, Entry>,
}

/// All tensors of a model, by name. Cloning shares the store.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<RwLock<Inner>>,
    device: Device,
    dtype: DType,
    seed: u64,
    noise: Arc<Mutex<InitRng>>,
    norm_group: Option<Arc<dyn Collective>>,
}

/// What a checkpoint load did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// In the model, absent from the checkpoint.
    pub missing: Vec<String>,
    /// In the checkpoint, absent from the model.
    pub unexpected: Vec<String>,
    /// (name, model shape, checkpoint shape)
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
    /// A readable listing of what did not match.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let list = |v: &[String]| {
            let mut t = v.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 20 {
                t += &format!(", ... ({} in all)", v.len());
            }
            t
        };
        if !self.missing.is_empty() {
            s += &format!(
                "missing {} tensor(s): {}. ",
                self.missing.len(),
                list(&self.missing)
            );
        }
        if !self.unexpected.is_empty() {
            s += &format!(
                "unexpected {} tensor(s): {}. ",
                self.unexpected.len(),
                list(&self.unexpected)
            );
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> = self
                .mismatched
                .iter()
                .take(20)
                .map(|(n, a, b)| format!("{n} (model {a:?}, checkpoint {b:?})"))
                .collect();
            s += &format!(
                "wrong shape for {} tensor(s): {}. ",
                self.mismatched.len(),
                m.join(", ")
            );
        }
        s.trim_end().to_string()
    }
}

/// How strictly a checkpoint must match the model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Accept model tensors the checkpoint lacks (they keep their initial values).
    pub allow_missing: bool,
    /// Accept checkpoint tensors the model lacks (e.g. a classifier head when loading a
    /// backbone from a classification checkpoint).
    pub allow_unexpected: bool,
    /// Read checkpoint names as `src_prefix + rest` and look them up as `dst_prefix + rest`;
    /// others are unexpected.
    pub rename_prefix: Option<(String, String)>,
}

impl LoadOptions {
    pub fn strict() -> Self {
        Self::default()
    }
    /// A backbone from a full classifier checkpoint: the head's tensors are skipped.
    pub fn backbone_only() -> Self {
        LoadOptions {
            allow_unexpected: true,
            ..Default::default()
        }
    }
}

impl ParamStore {
    pub fn new(device: &Device, dtype: DType, seed: u64) -> Self {
        ParamStore {
            inner: Arc::new(RwLock::new(Inner {
                vars: BTreeMap::new(),
            })),
            device: device.clone(),
            dtype,
            seed,
            noise: Arc::new(Mutex::new(InitRng::new(seed, "__noise__"))),
            norm_group: None,
        }
    }

    /// Batch norms built from this store synchronize their batch statistics over `group`
    /// (data-parallel training); a group of one is the same as none.
    pub fn with_norm_group(mut self, group: Option<Arc<dyn Collective>>) -> Self {
        self.norm_group = group.filter(|g| g.world_size() > 1);
        self
    }

    /// The group batch norms synchronize over, if any.
    pub fn norm_group(&self) -> Option<Arc<dyn Collective>> {
        self.norm_group.clone()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The root builder.
    pub fn root(&self) -> Vb {
        Vb {
            store: self.clone(),
            path: String::new(),
        }
    }

    /// Gets the tensor `name`, creating it with `init` on first use.
    pub fn get_or_init(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        init: Init,
        kind: ParamKind,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if let Some(e) = self.inner.read().unwrap().vars.get(name) {
            if e.var.shape() != &shape {
                candle_core::bail!(
                    "parameter {name} exists with shape {:?}, requested {:?}",
                    e.var.shape(),
                    shape
                )
            }
            return Ok(e.var.as_tensor().clone());
        }
        let mut rng = InitRng::new(self.seed, name);
        let data = fill(init, &shape, &mut rng);
        let t = Tensor::from_vec(data, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.inner
            .write()
            .unwrap()
            .vars
            .insert(name.to_string(), Entry { var, kind });
        Ok(out)
    }

    pub fn names(&self) -> Vec<String> {
        self.inner.read().unwrap().vars.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap().vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of scalar values in trainable tensors (or all tensors).
    pub fn count(&self, trainable_only: bool) -> usize {
        self.inner
            .read()
            .unwrap()
            .vars
            .values()
            .filter(|e| !trainable_only || e.kind.trainable())
            .map(|e| e.var.elem_count())
            .sum()
    }

    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.inner
            .read()
            .unwrap()
            .vars
            .get(name)
            .map(|e| e.var.as_tensor().clone())
    }

    pub fn var(&self, name: &str) -> Option<Var> {
        self.inner
            .read()
            .unwrap()
            .vars
            .get(name)
            .map(|e| e.var.clone())
    }

    pub fn kind(&self, name: &str) -> Option<ParamKind> {
        self.inner.read().unwrap().vars.get(name).map(|e| e.kind)
    }

    /// Trainable variables with their names and kinds, in name order.
    pub fn trainable(&self) -> Vec<(String, Var, ParamKind)> {
        self.inner
            .read()
            .unwrap()
            .vars
            .iter()
            .filter(|(_, e)| e.kind.trainable())
            .map(|(n, e)| (n.clone(), e.var.clone(), e.kind))
            .collect()
    }

    /// Every tensor (detached), by name.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.inner
            .read()
            .unwrap()
            .vars
            .iter()
            .map(|(n, e)| (n.clone(), e.var.as_detached_tensor()))
            .collect()
    }

    /// Overwrites one tensor's values (same shape; dtype converted).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let g = self.inner.read().unwrap();
        let e = g
            .vars
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter {name}")))?;
        e.var
            .set(&value.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// Copies checkpoint tensors into the model. Nothing is changed unless the load is
    /// accepted under `opts`; the error lists every mismatch.
    pub fn load_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        opts: &LoadOptions,
    ) -> Result<LoadReport> {
        let g = self.inner.read().unwrap();
        let mut report = LoadReport::default();
        let mut plan: Vec<(&Entry, &Tensor, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut ckpt_names: Vec<&String> = tensors.keys().collect();
        ckpt_names.sort();
        for name in ckpt_names {
            let t = &tensors[name];
            let target = match &opts.rename_prefix {
                Some((src, dst)) => match name.strip_prefix(src.as_str()) {
                    Some(rest) => format!("{dst}{rest}"),
                    None => {
                        report.unexpected.push(name.clone());
                        continue;
                    }
                },
                None => name.clone(),
            };
            match g.vars.get(&target) {
                None => report.unexpected.push(name.clone()),
                Some(e) => {
                    seen.insert(target.clone());
                    if e.var.dims() != t.dims() {
                        report
                            .mismatched
                            .push((target, e.var.dims().to_vec(), t.dims().to_vec()));
                    } else {
                        plan.push((e, t, target));
                    }
                }
            }
        }
        report.missing = g
            .vars
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        let refused = !report.mismatched.is_empty()
            || (!opts.allow_missing && !report.missing.is_empty())
            || (!opts.allow_unexpected && !report.unexpected.is_empty());
        if refused {
            candle_core::bail!("checkpoint does not match the model: {}", report.describe())
        }
        for (e, t, name) in plan {
            e.var
                .set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
            report.loaded.push(name);
        }
        Ok(report)
    }

    /// Loads a safetensors file (any float dtype; f16/bf16 are upcast). Errors name the file.
    pub fn load_safetensors(
        &self,
        path: impl AsRef<Path>,
        opts: &LoadOptions,
    ) -> Result<LoadReport> {
        let path = path.as_ref();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        self.load_tensors(&tensors, opts)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))
    }

    /// Writes every tensor to a safetensors file with `header` stored under the metadata key
    /// "pupil", atomically.
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        header: &serde_json::Value,
    ) -> Result<()> {
        save_tensors(path.as_ref(), &self.tensors(), header)
    }

    /// The generator for training noise (dropout, stochastic depth).
    pub fn noise_rng(&self) -> std::sync::MutexGuard<'_, InitRng> {
        self.noise.lock().unwrap()
    }

    pub fn noise_state(&self) -> u64 {
        self.noise.lock().unwrap().0
    }

    pub fn set_noise_state(&self, s: u64) {
        self.noise.lock().unwrap().0 = s;
    }
}

/// Writes tensors (converted to f32 unless integer) to a safetensors file with a JSON header,
/// through a temporary file and a rename.
pub fn save_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    header: &serde_json::Value,
) -> Result<()> {
    let mut raw: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    let mut bufs: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = Vec::new();
    for (name, t) in tensors {
        let t = t.to_device(&Device::Cpu)?;
        let (bytes, dtype) = match t.dtype() {
            DType::U8 => (t.flatten_all()?.to_vec1::<u8>()?, safetensors::Dtype::U8),
            DType::I64 => (
                t.flatten_all()?
                    .to_vec1::<i64>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                safetensors::Dtype::I64,
            ),
            _ => (
                t.to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                safetensors::Dtype::F32,
            ),
        };
        bufs.push((name.clone(), bytes, t.dims().to_vec(), dtype));
    }
    for (name, bytes, dims, dtype) in &bufs {
        let view = safetensors::tensor::TensorView::new(*dtype, dims.clone(), bytes)
            .map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))?;
        raw.push((name.clone(), view));
    }
    let mut meta = HashMap::new();
    meta.insert("pupil".to_string(), header.to_string());
    let bytes = safetensors::serialize(raw, Some(meta))
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    // pupil-data's writer: its temporaries are the ones a rerun recognises as stale.
    pupil_data::io::write_atomic(path, &bytes).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

/// Headers longer than this are not safetensors files written by pupil.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads the "pupil" JSON header of a checkpoint written by [`save_tensors`], without
/// reading its tensors.
pub fn read_header(path: impl AsRef<Path>) -> Result<Option<serde_json::Value>> {
    let path = path.as_ref();
    let err = |m: String| candle_core::Error::Msg(format!("{}: {m}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    use std::io::Read;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let len = u64::from_le_bytes(n);
    if len > MAX_HEADER_BYTES {
        return Err(err("not a safetensors file: header too large".into()));
    }
    let mut buf = n.to_vec();
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| err(format!("truncated header: {e}")))?;
    parse_header(&buf).map_err(|e| err(e.to_string()))
}

/// The "pupil" header of safetensors bytes (at least the 8-byte length and the JSON header
/// it announces); `None` for a safetensors file without one.
pub fn parse_header(bytes: &[u8]) -> Result<Option<serde_json::Value>> {
    let msg = |m: String| candle_core::Error::Msg(m);
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| msg("not a safetensors file: shorter than 8 bytes".into()))?;
    if n > MAX_HEADER_BYTES {
        return Err(msg("not a safetensors file: header too large".into()));
    }
    let buf = bytes
        .get(8..8 + n as usize)
        .ok_or_else(|| msg(format!("truncated header: {n} bytes announced")))?;
    let v: serde_json::Value =
        serde_json::from_slice(buf).map_err(|e| msg(format!("malformed header: {e}")))?;
    match v
        .get("__metadata__")
        .and_then(|m| m.get("pupil"))
        .and_then(|s| s.as_str())
    {
        Some(s) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| msg(format!("malformed pupil header: {e}"))),
        None => Ok(None),
    }
}

/// A path into the store, like candle-nn's VarBuilder: `vb.pp("blocks").pp(0).get(...)`.
#[derive(Clone)]
pub struct Vb {
    store: ParamStore,
    path: String,
}

impl Vb {
    pub fn pp(&self, s: impl std::fmt::Display) -> Vb {
        let path = if self.path.is_empty() {
            s.to_string()
        } else {
            format!("{}.{}", self.path, s)
        };
        Vb {
            store: self.store.clone(),
            path,
        }
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.path.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{}", self.path, leaf)
        }
    }

    pub fn get(
        &self,
        shape: impl Into<Shape>,
        leaf: &str,
        init: Init,
        kind: ParamKind,
    ) -> Result<Tensor> {
        self.store.get_or_init(&self.name(leaf), shape, init, kind)
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }
    pub fn device(&self) -> &Device {
        &self.store.device
    }
    pub fn dtype(&self) -> DType {
        self.store.dtype
    }
    pub fn path(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_depends_on_seed_and_name_only() {
        let a = ParamStore::new(&Device::Cpu, DType::F32, 3);
        let b = ParamStore::new(&Device::Cpu, DType::F32, 3);
        let x = a
            .root()
            .pp("m")
            .get(
                (4, 5),
                "w",
                Init::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                ParamKind::Kernel,
            )
            .unwrap();
        b.root()
            .get(2, "other", Init::Const(0.0), ParamKind::Bias)
            .unwrap();
        let y = b
            .root()
            .pp("m")
            .get(
                (4, 5),
                "w",
                Init::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                ParamKind::Kernel,
            )
            .unwrap();
        assert_eq!(x.to_vec2::<f32>().unwrap(), y.to_vec2::<f32>().unwrap());
        let c = ParamStore::new(&Device::Cpu, DType::F32, 4);
        let z = c
            .root()
            .pp("m")
            .get(
                (4, 5),
                "w",
                Init::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                ParamKind::Kernel,
            )
            .unwrap();
        assert_ne!(x.to_vec2::<f32>().unwrap(), z.to_vec2::<f32>().unwrap());
        // statistics of a large normal draw
        let big = a
            .root()
            .get(
                10_000,
                "big",
                Init::Normal {
                    mean: 0.0,
                    std: 2.0,
                },
                ParamKind::Kernel,
            )
            .unwrap();
        let v: Vec<f32> = big.to_vec1().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(
            mean.abs() < 0.06 && (var.sqrt() - 2.0).abs() < 0.06,
            "{mean} {var}"
        );
    }

    #[test]
    fn strict_load_reports_everything_and_changes_nothing() {
        let s = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let r = s.root();
        r.get((2, 2), "a", Init::Const(1.0), ParamKind::Kernel)
            .unwrap();
        r.get(3, "b", Init::Const(1.0), ParamKind::Bias).unwrap();
        r.get(1, "c", Init::Const(1.0), ParamKind::Buffer).unwrap();
        let mut ck = HashMap::new();
        ck.insert(
            "a".to_string(),
            Tensor::zeros((2, 2), DType::F16, &Device::Cpu).unwrap(),
        );
        ck.insert(
            "b".to_string(),
            Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
        );
        ck.insert(
            "zz".to_string(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = s
            .load_tensors(&ck, &LoadOptions::strict())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing 1 tensor(s): c"), "{e}");
        assert!(e.contains("unexpected 1 tensor(s): zz"), "{e}");
        assert!(e.contains("b (model [3], checkpoint [4])"), "{e}");
        assert_eq!(
            s.get("a").unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1.0; 2]; 2],
            "nothing loaded"
        );
        ck.insert(
            "b".to_string(),
            Tensor::zeros(3, DType::BF16, &Device::Cpu).unwrap(),
        );
        let opts = LoadOptions {
            allow_missing: true,
            allow_unexpected: true,
            ..Default::default()
        };
        let rep = s.load_tensors(&ck, &opts).unwrap();
        assert_eq!(rep.loaded, vec!["a", "b"]);
        assert_eq!(
            s.get("b").unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0; 3],
            "bf16 upcast"
        );
        assert_eq!(s.get("c").unwrap().to_vec1::<f32>().unwrap(), vec![1.0]);
    }

    #[test]
    fn save_and_reload_with_header() {
        let d = tempfile::tempdir().unwrap();
        let s = ParamStore::new(&Device::Cpu, DType::F32, 1);
        s.root()
            .pp("x")
            .get(
                (3, 2),
                "w",
                Init::Uniform { lo: -1.0, hi: 1.0 },
                ParamKind::Kernel,
            )
            .unwrap();
        let p = d.path().join("m.safetensors");
        s.save_safetensors(&p, &serde_json::json!({"model": "tiny", "n": 3}))
            .unwrap();
        assert_eq!(read_header(&p).unwrap().unwrap()["model"], "tiny");
        let t = ParamStore::new(&Device::Cpu, DType::F32, 2);
        t.root()
            .pp("x")
            .get((3, 2), "w", Init::Const(0.0), ParamKind::Kernel)
            .unwrap();
        t.load_safetensors(&p, &LoadOptions::strict()).unwrap();
        assert_eq!(
            s.get("x.w").unwrap().to_vec2::<f32>().unwrap(),
            t.get("x.w").unwrap().to_vec2::<f32>().unwrap()
        );
        let bad = d.path().join("bad.safetensors");
        std::fs::write(&bad, b"garbage").unwrap();
        let e = t
            .load_safetensors(&bad, &LoadOptions::strict())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.safetensors"), "{e}");
    }
}
