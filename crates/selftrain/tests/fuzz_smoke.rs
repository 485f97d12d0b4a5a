//! A short fuzz pass over the checkpoint loader and the run config, run by CI (the long runs
//! use cargo-fuzz, see fuzz/README.md): a value or an error, never a panic.
use proptest::prelude::*;
use pupil_nn::{LoadOptions, ParamStore};
use pupil_selftrain::checks::check_config;
use pupil_selftrain::config::{parse_config, TrainConfig};
use pupil_testkit::{fuzz_seeds, mutate, workspace_root};

fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzz_seeds(target);
    let n = seeds.len();
    let edits = prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8);
    prop_oneof![
        7 => (0..n, edits).prop_map(move |(k, e)| mutate(&seeds[k], &e)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// The fuzz target's small detector (`fuzz/model.toml`).
fn store() -> ParamStore {
    let text = std::fs::read_to_string(workspace_root().join("fuzz/model.toml")).unwrap();
    let cfg: TrainConfig = parse_config(Some(&text), "model.toml", None, &[]).unwrap();
    let store = ParamStore::new(&candle_core::Device::Cpu, candle_core::DType::F32, 0);
    pupil_selftrain::task::build(&cfg, 10, &store).unwrap();
    store
}

fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (body, set) = text.rsplit_once('\n').unwrap_or((text, ""));
    let sets: Vec<String> = set
        .contains('=')
        .then(|| set.to_string())
        .into_iter()
        .collect();
    if let Ok(c) = parse_config::<TrainConfig>(Some(body), "f.toml", None, &sets) {
        let _ = check_config(&c);
    }
    type Exp = pupil_selftrain::grid::ExperimentConfig;
    let _ = parse_config::<Exp>(Some(body), "f.toml", None, &[]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn checkpoint(data in input("checkpoint")) {
        thread_local!(static STORE: ParamStore = store());
        if let Ok(Some(h)) = pupil_nn::params::parse_header(&data) {
            if let Ok(c) = serde_json::from_value::<TrainConfig>(h["config"].clone()) {
                let _ = check_config(&c);
            }
        }
        if let Ok(c) = pupil_selftrain::checkpoint::from_bytes(&data) {
            let _ = check_config(&c.state.config);
            STORE.with(|s| {
                let _ = s.load_tensors(&c.model, &LoadOptions::strict());
            });
        }
    }

    #[test]
    fn toml_config(data in input("toml_config")) {
        config(&data);
    }
}

#[test]
fn the_seeds_reach_past_the_parsers() {
    for s in fuzz_seeds("checkpoint") {
        let h = pupil_nn::params::parse_header(&s).unwrap().unwrap();
        check_config(&serde_json::from_value(h["config"].clone()).unwrap()).unwrap();
        if h["format"] == "pupil-model" {
            continue;
        }
        let c = pupil_selftrain::checkpoint::from_bytes(&s).unwrap();
        check_config(&c.state.config).unwrap();
        // a few of the model's tensors: named and shaped as its, yet not all of them
        let e = store()
            .load_tensors(&c.model, &LoadOptions::strict())
            .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
    for s in fuzz_seeds("toml_config") {
        let text = std::str::from_utf8(&s).unwrap();
        let (body, _) = text.rsplit_once('\n').unwrap();
        let tc = parse_config::<TrainConfig>(Some(body), "seed", None, &[]);
        let ec =
            parse_config::<pupil_selftrain::grid::ExperimentConfig>(Some(body), "seed", None, &[]);
        assert!(tc.is_ok() || ec.is_ok(), "{text}");
    }
}
