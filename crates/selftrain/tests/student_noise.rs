//! A student's dropout (`selftrain.dropout`) noises detection and segmentation students:
//! training losses change with it, evaluation does not.
use candle_core::{DType, Device};
use pupil_data::batch::{collate, Batch, BatchConfig};
use pupil_data::source::DatasetSpec;
use pupil_data::Dataset;
use pupil_nn::ParamStore;
use pupil_selftrain::config::{load_config, TrainConfig};
use pupil_selftrain::data::{eval_transform, split_spec};
use pupil_selftrain::experiment::student_config;
use pupil_selftrain::task;
use std::path::Path;

const TINY: &str = r#"
seed = 5
[backbone]
name = "efficientnet"
width = 0.25
depth = 0.1
drop_path = 0.0
[detector]
head_convs = 1
head_channels = 8
[detector.neck]
channels = 8
min_level = 3
max_level = 5
[detector.anchors]
min_level = 3
max_level = 5
anchor_size = 2.0
[segmenter.neck]
channels = 8
repeats = 1
[segmenter]
head_convs = 1
head_channels = 8
[data]
size_divisor = 32
[data.digits]
image_size = 64
max_digit_size = 30
train = 4
[augment]
size = 64
"#;

fn config(task: &str, dropout: f64) -> TrainConfig {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("tiny.toml");
    std::fs::write(&f, TINY).unwrap();
    let sets = [
        format!("task={task}"),
        format!("selftrain.dropout={dropout:?}"),
    ];
    let cfg: TrainConfig = load_config(Some(&f), None, &sets).unwrap();
    student_config(&cfg, Path::new("teacher.safetensors"))
}

fn batch(cfg: &TrainConfig) -> Batch {
    let ds = split_spec(cfg, false).unwrap().open().unwrap();
    let t = eval_transform(cfg);
    let views: Vec<_> = (0..ds.len())
        .map(|i| t(ds.get(i).unwrap(), &mut pupil_data::Rng::new(0)).unwrap())
        .collect();
    let bc = BatchConfig {
        size_divisor: 32,
        ..Default::default()
    };
    collate(&views, &bc, &Device::Cpu).unwrap()
}

/// The loss of a freshly built model (same seed, so the same weights) on `b`.
fn loss(cfg: &TrainConfig, b: &Batch, train: bool) -> f64 {
    let store = ParamStore::new(&Device::Cpu, DType::F32, 11);
    let k = pupil_selftrain::data::num_outputs(cfg.task, &names(), &cfg.data.dataset);
    let m = task::build(cfg, k, &store).unwrap();
    let (l, _) = m.loss(b, train).unwrap();
    l.to_scalar::<f32>().unwrap() as f64
}

fn names() -> Vec<String> {
    DatasetSpec::Digits {
        config: Default::default(),
        split: pupil_data::digits::Split::Train,
    }
    .open()
    .unwrap()
    .class_names()
}

#[test]
fn student_dropout_noises_detection_and_segmentation_heads() {
    for t in ["detection", "segmentation"] {
        let (off, on) = (config(t, 0.0), config(t, 0.5));
        assert_eq!((on.detector.dropout, on.segmenter.dropout), (0.5, 0.5));
        let b = batch(&off);
        let (a, c) = (loss(&off, &b, true), loss(&on, &b, true));
        assert!(
            (a - c).abs() > 1e-6,
            "{t}: dropout left the training loss at {a}"
        );
        // the masks come from the store's seeded generator: the same run twice agrees
        assert_eq!(c, loss(&on, &b, true), "{t}");
        // evaluation is not noised
        assert_eq!(loss(&off, &b, false), loss(&on, &b, false), "{t}");
    }
}
