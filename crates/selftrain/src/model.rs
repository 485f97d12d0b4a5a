//! The model of a run (detector, segmenter or classifier) behind one interface for the
//! trainer: build, initialise, loss on a batch, evaluation on a dataset, and checkpoints that
//! carry their own config.
use crate::config::{Task, TrainConfig};
use candle_core::{DType, Device, Result, Tensor, D};
use pupil_backbones::hub;
use pupil_backbones::params::{LoadOptions, ParamStore};
use pupil_backbones::zoo::{self, AnyBackbone};
use pupil_data::batch::{collate, Batch, BatchConfig};
use pupil_data::coco::eval::CocoEval;
use pupil_data::coco::CocoFile;
use pupil_data::dataset::{Loader, LoaderConfig, Transform};
use pupil_data::metrics::ConfusionMatrix;
use pupil_data::Dataset;
use pupil_heads::retinanet::RetinaNet;
use pupil_heads::seg::Segmenter;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub enum Model {
    Detector(RetinaNet),
    Segmenter(Segmenter),
    Classifier(AnyBackbone),
}

fn err(m: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(m.to_string())
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

/// Metrics of an evaluation; `primary` is AP (detection), mIoU (segmentation) or top-1.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    pub primary: f64,
    pub values: BTreeMap<String, f64>,
}

impl Model {
    pub fn build(cfg: &TrainConfig, num_classes: usize, store: &ParamStore) -> Result<Model> {
        let vb = store.root();
        Ok(match cfg.task {
            Task::Detection => {
                let mut d = cfg.detector.clone();
                d.num_classes = num_classes;
                Model::Detector(RetinaNet::new(&vb, &cfg.backbone, &d)?)
            }
            Task::Segmentation => {
                let mut s = cfg.segmenter.clone();
                s.num_classes = num_classes;
                Model::Segmenter(Segmenter::new(&vb, &cfg.backbone, &s)?)
            }
            Task::Classification => {
                let mut b = cfg.backbone.clone();
                b.num_classes = num_classes;
                Model::Classifier(zoo::build(&vb.pp("backbone"), &b)?)
            }
        })
    }

    /// Total loss and its named parts.
    pub fn loss(&self, batch: &Batch, train: bool) -> Result<(Tensor, Vec<(String, f64)>)> {
        match self {
            Model::Detector(m) => {
                let l = m.loss(batch, train)?;
                Ok((
                    l.total,
                    vec![
                        ("cls".into(), l.cls),
                        ("box".into(), l.boxes),
                        ("positives".into(), l.num_positives as f64),
                    ],
                ))
            }
            Model::Segmenter(m) => {
                let labels = batch
                    .label_maps
                    .as_ref()
                    .ok_or_else(|| err("segmentation needs label maps"))?;
                Ok((m.loss(&batch.images, labels, train)?, vec![]))
            }
            Model::Classifier(b) => {
                let c = b
                    .classifier()
                    .ok_or_else(|| err("no classification head"))?;
                let logits = c.logits_t(&batch.images, train)?;
                let labels: Vec<u32> = batch
                    .classes
                    .to_vec2::<i64>()?
                    .iter()
                    .map(|r| r[0].max(0) as u32)
                    .collect();
                let n = labels.len();
                let lp = pupil_ops::log_softmax_last_dim(&logits)?;
                let idx = Tensor::from_vec(labels, (n, 1), logits.device())?;
                let loss = (lp.gather(&idx, D::Minus1)?.sum_all()?.neg()? / n as f64)?;
                Ok((loss, vec![]))
            }
        }
    }

    /// AP / AP50 (detection), mIoU (segmentation) or top-1 accuracy on a dataset.
    pub fn evaluate(
        &self,
        ds: Arc<dyn Dataset>,
        transform: Arc<Transform>,
        bc: &BatchConfig,
        device: &Device,
        batch_size: usize,
    ) -> Result<Metrics> {
        let loader = Loader::new(
            ds.clone(),
            LoaderConfig {
                batch_size,
                shuffle: false,
                drop_last: false,
                seed: 0,
                workers: 2,
                prefetch: 2,
            },
        );
        // Originals come from the loader and are transformed here, so ground truth and
        // predictions come from one read of each image.
        let view = |samples: &[pupil_data::Sample]| -> Result<Vec<pupil_data::Sample>> {
            samples
                .iter()
                .map(|s| transform(s.clone(), &mut pupil_data::Rng::new(0)).map_err(err))
                .collect()
        };
        let names = ds.class_names();
        let mut out = Metrics::default();
        match self {
            Model::Detector(m) => {
                let mut preds = Vec::new();
                let mut gt = CocoFile::from_samples(&[], &names);
                for b in loader.epoch(0) {
                    let originals = b.map_err(err)?;
                    let batch = collate(&view(&originals)?, bc, device).map_err(err)?;
                    let dets = m.predict(&batch.images, &batch.info)?;
                    for (s, d) in originals.iter().zip(dets) {
                        preds.push((s.image_id, d));
                    }
                    // ground truth in original coordinates
                    let part = CocoFile::from_samples(&originals, &names);
                    let first = gt.annotations.len() as u64;
                    gt.images.extend(part.images);
                    gt.annotations
                        .extend(part.annotations.into_iter().map(|mut a| {
                            a.id += first;
                            a
                        }));
                }
                let mut ev = CocoEval::new(&gt);
                for (id, d) in preds {
                    let b: Vec<[f32; 4]> = d.iter().map(|x| x.bbox).collect();
                    let c: Vec<u32> = d.iter().map(|x| x.class).collect();
                    let s: Vec<f32> = d.iter().map(|x| x.score).collect();
                    ev.add_xyxy(id, &b, &c, &s).map_err(err)?;
                }
                let r = ev.evaluate().map_err(err)?;
                for (n, v) in pupil_data::coco::eval::STAT_NAMES.iter().zip(r.stats) {
                    out.values.insert(n.to_string(), v.max(0.0));
                }
                out.primary = r.stats[0].max(0.0);
            }
            Model::Segmenter(m) => {
                let k = m.config.num_classes;
                let mut cm = ConfusionMatrix::new(k);
                for b in loader.epoch(0) {
                    let originals = b.map_err(err)?;
                    let batch = collate(&view(&originals)?, bc, device).map_err(err)?;
                    let preds = m.predict(&batch.images, &batch.info)?;
                    for (s, (p, _)) in originals.iter().zip(preds) {
                        let gt = s.label_map.as_ref().ok_or_else(|| {
                            err(format!("image id {} has no label map", s.image_id))
                        })?;
                        cm.update_planes(gt, &p).map_err(err)?;
                    }
                }
                out.primary = cm.mean_iou().unwrap_or(0.0);
                out.values.insert("mIoU".into(), out.primary);
                out.values
                    .insert("pixel_accuracy".into(), cm.pixel_accuracy().unwrap_or(0.0));
            }
            Model::Classifier(b) => {
                let c = b
                    .classifier()
                    .ok_or_else(|| err("no classification head"))?;
                let (mut right, mut n) = (0usize, 0usize);
                for bt in loader.epoch(0) {
                    let samples = bt.map_err(err)?;
                    let batch = collate(&view(&samples)?, bc, device).map_err(err)?;
                    let pred: Vec<u32> = c
                        .logits_t(&batch.images, false)?
                        .argmax(D::Minus1)?
                        .to_vec1()?;
                    for (s, p) in samples.iter().zip(pred) {
                        right += (s.classes[0] == p) as usize;
                        n += 1;
                    }
                }
                out.primary = right as f64 / n.max(1) as f64;
                out.values.insert("top1".into(), out.primary);
            }
        }
        Ok(out)
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
/// with the run config, task, class names and number of outputs.
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
    store.save_safetensors(path, &header)
}

pub struct Loaded {
    pub config: TrainConfig,
    pub class_names: Vec<String>,
    pub num_outputs: usize,
    pub store: ParamStore,
    pub model: Model,
}

/// Loads a model written by [`save_model`] or a training checkpoint.
pub fn load_model(path: &Path, device: &Device) -> Result<Loaded> {
    let h = pupil_backbones::params::read_header(path)?
        .ok_or_else(|| err(format!("{}: not a pupil model (no header)", path.display())))?;
    let config: TrainConfig = serde_json::from_value(h["config"].clone())
        .map_err(|e| err(format!("{}: config in the header: {e}", path.display())))?;
    let class_names: Vec<String> =
        serde_json::from_value(h["class_names"].clone()).unwrap_or_default();
    let num_outputs = h["num_outputs"]
        .as_u64()
        .ok_or_else(|| err(format!("{}: header lacks num_outputs", path.display())))?
        as usize;
    let store = ParamStore::new(device, DType::F32, config.seed);
    let model = Model::build(&config, num_outputs, &store)?;
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
        model,
    })
}
