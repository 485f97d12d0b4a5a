//! A training checkpoint as a resumed run reads it: the safetensors header, the state and
//! config in it (range-checked), the tensors, loaded strictly into a small detector.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pupil_nn::{LoadOptions, ParamStore};
use pupil_selftrain::config::{parse_config, TrainConfig};
use std::sync::OnceLock;

const TINY: &str = include_str!("../model.toml");

fuzz_target!(|data: &[u8]| {
    static STORE: OnceLock<ParamStore> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        let cfg: TrainConfig = parse_config(Some(TINY), "tiny", None, &[]).unwrap();
        let store = ParamStore::new(&candle_core::Device::Cpu, candle_core::DType::F32, 0);
        pupil_selftrain::task::build(&cfg, 10, &store).unwrap();
        store
    });
    // the model-file header too (the teacher a pseudo-labeling run loads)
    if let Ok(Some(h)) = pupil_nn::params::parse_header(data) {
        if let Ok(c) = serde_json::from_value::<TrainConfig>(h["config"].clone()) {
            let _ = pupil_selftrain::checks::check_config(&c);
        }
    }
    let Ok(c) = pupil_selftrain::checkpoint::from_bytes(data) else {
        return;
    };
    let _ = pupil_selftrain::checks::check_config(&c.state.config);
    let _ = store.load_tensors(&c.model, &LoadOptions::strict());
});
