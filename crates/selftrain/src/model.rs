//! Models on disk and where they run: the device, initialisation from a pre-trained
//! backbone, and models saved with the config that built them.
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::task::{self, Task};
use candle_core::{DType, Device, Tensor};
use pupil_backbones::hub;
use pupil_nn::params::read_header;
use pupil_nn::{LoadOptions, ParamStore};
use std::path::Path;

fn err(m: impl std::fmt::Display) -> Error {
    Error::msg(m)
}

/// `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let n = s
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse::<usize>()
                .map_err(|_| err(format!("bad device {s:?}")))?;
            if !candle_core::utils::cuda_is_available() {
                return Err(err(format!(
                    "device {s:?}: this pupil was built without CUDA (build with the `cuda` feature, see the README)"
                )));
            }
            Device::new_cuda(n).map_err(|e| err(format!("device {s:?}: {e}")))
        }
        s => Err(err(format!("unknown device {s:?} (cpu, cuda, cuda:N)"))),
    }
}

/// Initialises a model from `random` or `pretrained:PATH|hf:owner/name`: backbone tensors
/// only, the head of a classification checkpoint skipped; every backbone tensor must load.
pub fn apply_init(store: &ParamStore, init: &str) -> Result<()> {
    if init == "random" || init.is_empty() {
        return Ok(());
    }
    let spec = init.strip_prefix("pretrained:").ok_or_else(|| {
        err(format!(
            "init must be random or pretrained:PATH, got {init:?}"
        ))
    })?;
    let path = hub::resolve(spec)?;
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    // pupil training checkpoints keep the backbone under `backbone.`; plain backbone files
    // (pupil pretrain, timm) have bare names.
    let bare = !tensors.keys().any(|k| k.starts_with("backbone."));
    let opts = LoadOptions {
        allow_missing: true,
        allow_unexpected: true,
        rename_prefix: if bare {
            Some((String::new(), "backbone.".into()))
        } else {
            None
        },
    };
    let rep = store
        .load_tensors(&tensors, &opts)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    let missing: Vec<&String> = rep
        .missing
        .iter()
        .filter(|n| n.starts_with("backbone."))
        .collect();
    if !missing.is_empty() || rep.loaded.is_empty() {
        return Err(err(format!(
            "{}: does not hold this backbone ({} of its tensors missing, e.g. {:?})",
            path.display(),
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// A trained model saved with its config: `model.safetensors` holds every tensor and a header
/// with the run config, task, class names and number of outputs. A non-finite weight is an
/// error naming the tensor, and nothing is written.
pub fn save_model(
    path: &Path,
    cfg: &TrainConfig,
    names: &[String],
    num_outputs: usize,
    store: &ParamStore,
) -> Result<()> {
    let header = serde_json::json!({
        "format": "pupil-model",
        "config": cfg,
        "class_names": names,
        "num_outputs": num_outputs,
    });
    // a run never writes non-finite weights
    crate::checkpoint::ensure_finite(path, &store.tensors())?;
    Ok(store.save_safetensors(path, &header)?)
}

pub struct Loaded {
    pub config: TrainConfig,
    pub class_names: Vec<String>,
    pub num_outputs: usize,
    pub store: ParamStore,
    pub task: Box<dyn Task>,
}

/// What a model file's header says: the config that built it, its class names and its
/// number of outputs.
pub struct Header {
    pub config: TrainConfig,
    pub class_names: Vec<String>,
    pub num_outputs: usize,
}

/// Reads the header of a model written by [`save_model`] or a training checkpoint.
pub fn read_model_header(path: &Path) -> Result<Header> {
    let h = read_header(path)?
        .ok_or_else(|| err(format!("{}: not a pupil model (no header)", path.display())))?;
    let config: TrainConfig = serde_json::from_value(h["config"].clone())
        .map_err(|e| err(format!("{}: config in the header: {e}", path.display())))?;
    let class_names: Vec<String> =
        serde_json::from_value(h["class_names"].clone()).unwrap_or_default();
    let num_outputs = h["num_outputs"]
        .as_u64()
        .ok_or_else(|| err(format!("{}: header lacks num_outputs", path.display())))?
        as usize;
    Ok(Header {
        config,
        class_names,
        num_outputs,
    })
}

/// Loads a model written by [`save_model`] or a training checkpoint.
pub fn load_model(path: &Path, device: &Device) -> Result<Loaded> {
    load_model_as(path, device, read_model_header(path)?)
}

/// Loads a model's tensors into the model `header.config` builds (the file's own header,
/// or one whose non-structural keys, such as post-processing, were overridden).
pub fn load_model_as(path: &Path, device: &Device, header: Header) -> Result<Loaded> {
    let Header {
        config,
        class_names,
        num_outputs,
    } = header;
    let store = ParamStore::new(device, DType::F32, config.seed);
    let task = task::build(&config, num_outputs, &store)?;
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    // training checkpoints prefix the model's tensors with `model.`
    let model_tensors: std::collections::HashMap<String, Tensor> =
        if tensors.keys().any(|k| k.starts_with("model.")) {
            tensors
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix("model.").map(|s| (s.to_string(), v)))
                .collect()
        } else {
            tensors
        };
    store
        .load_tensors(&model_tensors, &LoadOptions::strict())
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    Ok(Loaded {
        config,
        class_names,
        num_outputs,
        store,
        task,
    })
}
