//! A run config as `--config` and `--set` give it: TOML text, a `--set` override made of
//! the input's last line, deserialisation and the value-range checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pupil_selftrain::config::{parse_config, TrainConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (body, set) = text.rsplit_once('\n').unwrap_or((text, ""));
    let sets: Vec<String> = set
        .contains('=')
        .then(|| set.to_string())
        .into_iter()
        .collect();
    if let Ok(c) = parse_config::<TrainConfig>(Some(body), "fuzz.toml", None, &sets) {
        let _ = pupil_selftrain::checks::check_config(&c);
    }
    let _ = parse_config::<pupil_selftrain::grid::ExperimentConfig>(
        Some(body),
        "fuzz.toml",
        None,
        &[],
    );
});
