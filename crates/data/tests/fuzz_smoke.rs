//! A short fuzz pass over every reader, run by CI (the long runs use cargo-fuzz, see
//! fuzz/README.md): arbitrary bytes and mutations of the fuzz seeds must give a value or an
//! error, never a panic.
use proptest::prelude::*;
use pupil_data::coco::{self, eval, CocoDataset, CocoFile};
use pupil_data::{io, voc, Image, Sample};
use pupil_testkit::{fuzz_seeds, mutate};
use std::path::Path;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 5000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

type Edits = Vec<(usize, u8, u8)>;

fn edits() -> impl Strategy<Value = Edits> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8)
}

/// A seed of `target` mutated, or arbitrary bytes (one input in eight).
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzz_seeds(target);
    let n = seeds.len();
    prop_oneof![
        7 => (0..n, edits()).prop_map(move |(k, e)| mutate(&seeds[k], &e)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn instances(data: &[u8]) {
    let Ok(file) = CocoFile::from_slice(data, Path::new("f.json")) else {
        return;
    };
    let ds = CocoDataset::new("f.json".into(), Path::new("."), file).with_masks(true);
    for i in 0..ds.file.images.len().min(16) {
        if ds.file.images[i].width * ds.file.images[i].height <= 1 << 16 {
            let _ = ds.targets(i, &mut Sample::new(Image::new(1, 1, 3, 0)));
        }
    }
}

/// The ground truth the results are scored against, read once for every case.
static GT: std::sync::LazyLock<CocoFile> = std::sync::LazyLock::new(|| {
    CocoFile::from_slice(&fuzz_seeds("coco_instances")[0], Path::new("gt")).unwrap()
});

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn coco_instances(data in input("coco_instances")) {
        instances(&data);
    }

    #[test]
    fn coco_results(data in input("coco_results")) {
        if let Ok(d) = coco::parse_results(&data, Path::new("f.json")) {
            let _ = eval::evaluate(&GT, &d, &eval::EvalParams::default());
        }
    }

    #[test]
    fn voc_xml(data in input("voc_xml")) {
        if let Ok(t) = std::str::from_utf8(&data) {
            let _ = voc::VocAnnotation::parse(t, Path::new("f.xml"));
        }
    }

    #[test]
    fn images(data in input("image")) {
        let _ = io::decode_image(&data, Path::new("f"));
        let _ = io::decode_label_png(&data, Path::new("f"));
    }
}

#[test]
fn the_seeds_reach_past_the_parsers() {
    for s in fuzz_seeds("coco_instances") {
        CocoFile::from_slice(&s, Path::new("seed")).unwrap();
    }
    for s in fuzz_seeds("coco_results") {
        coco::parse_results(&s, Path::new("seed")).unwrap();
    }
    for s in fuzz_seeds("voc_xml") {
        voc::VocAnnotation::parse(std::str::from_utf8(&s).unwrap(), Path::new("seed")).unwrap();
    }
    for s in fuzz_seeds("image") {
        io::decode_image(&s, Path::new("seed")).unwrap();
    }
}
