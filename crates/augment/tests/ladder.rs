//! Named ladders, config parsing, and determinism through the loader.
mod common;

use common::{sample, MaskKind};
use pupil_augment::ladder::{ladder_with, LadderOptions};
use pupil_augment::{ladder, parse_pipeline, parse_toml, to_transform, Augment, Pipeline, Size};
use pupil_data::{Dataset, InMemory, Loader, LoaderConfig, Rng, Sample};
use std::sync::Arc;

fn run(p: &Pipeline, seed: u64) -> Sample {
    let mut s = sample(50, 36, 3, 4, MaskKind::Ragged, 11, false);
    p.apply(&mut s, &mut Rng::new(seed));
    s
}

#[test]
fn ladders_have_the_papers_steps_in_parser_order() {
    let size = Size::square(64);
    let d = |n: &str| ladder(n, size).unwrap().describe();
    assert_eq!(d("s1"), "hflip | scale_jitter(size=64x64,pad=128)");
    assert_eq!(
        d("s2"),
        "autoaugment(v0) | hflip | scale_jitter(size=64x64,pad=128)"
    );
    assert_eq!(d("s3"), "autoaugment(v0) | hflip | lsj(size=64x64,pad=128)");
    assert_eq!(
        d("s4"),
        "randaugment(n=2,m=10) | hflip | lsj(size=64x64,pad=128)"
    );
    assert!(ladder("s5", size).unwrap_err().to_string().contains("s5"));
}

/// Scale factor relative to fitting the image in the desired size, as seen through `meta`.
fn jitter_factor(s: &Sample, fit: f32) -> f32 {
    s.meta.scale.1 / fit
}

#[test]
fn ladder_scale_ranges() {
    // 50x36 image, desired 64: fit scale 64/50; the jitter factor r times that, up to the
    // rounding of round(r * 64).
    let fit = 64.0 / 50.0;
    for (name, lo, hi) in [
        ("s1", 0.8, 1.2),
        ("s2", 0.8, 1.2),
        ("s3", 0.5, 2.0),
        ("s4", 0.5, 2.0),
    ] {
        let o = LadderOptions {
            pad_multiple: 32,
            ..LadderOptions::new(Size::square(64))
        };
        let p = ladder_with(name, o).unwrap();
        let (mut mn, mut mx) = (f32::MAX, 0.0f32);
        for seed in 0..300 {
            let s = run(&p, seed);
            assert_eq!((s.image.width, s.image.height), (64, 64), "{name}");
            s.check().unwrap();
            common::boxes_inside(&s).unwrap();
            let r = jitter_factor(&s, fit);
            mn = mn.min(r);
            mx = mx.max(r);
        }
        let tol = 0.03;
        assert!(mn >= lo - tol && mx <= hi + tol, "{name}: [{mn}, {mx}]");
        assert!(
            mn < lo + 0.05 && mx > hi - 0.05,
            "{name}: range [{mn}, {mx}] not covered"
        );
    }
}

#[test]
fn s1_flips_half_the_time_and_leaves_colours() {
    let p = ladder("s1", Size::square(64)).unwrap();
    let flipped = (0..400).filter(|&seed| run(&p, seed).meta.flipped).count();
    assert!((160..240).contains(&flipped), "{flipped}");
}

#[test]
fn config_string_matches_the_builders() {
    let a = parse_pipeline("s4(size=64,pad=32)").unwrap();
    let b = ladder_with(
        "s4",
        LadderOptions {
            pad_multiple: 32,
            ..LadderOptions::new(Size::square(64))
        },
    )
    .unwrap();
    let c =
        parse_pipeline("randaugment(n=2, m=10) | hflip(0.5) | lsj(0.5, 2.0, size=64x64, pad=32)")
            .unwrap();
    for seed in 0..20 {
        let sa = run(&a, seed);
        assert_eq!(sa, run(&b, seed));
        assert_eq!(sa, run(&c, seed));
    }
    let p = parse_pipeline("lsj(0.5,2.0) | randaugment(n=2,m=10) | hflip").unwrap();
    assert_eq!(p.len(), 3);
    let s = run(&p, 1);
    assert_eq!((s.image.width, s.image.height), (640, 640));
    let p = parse_pipeline("resize(40x20) | Rotate_BBox(p=1, level=5) | equalize(0.5)").unwrap();
    let s = run(&p, 2);
    assert_eq!((s.image.width, s.image.height), (40, 20));
}

#[test]
fn config_errors_name_the_step() {
    let e = parse_pipeline("hflip | randaugment(n=2,q=3)").unwrap_err();
    assert!(
        e.item.contains("step 2") && e.item.contains("randaugment"),
        "{e}"
    );
    assert!(e.msg.contains("'q'"), "{e}");
    let e = parse_pipeline("hflip | blur(3)").unwrap_err();
    assert!(e.to_string().contains("blur"), "{e}");
    for bad in [
        "lsj(size=0)",
        "lsj(size=64x)",
        "lsj(2.0,0.5)",
        "hflip(p=1.5)",
        "aa(v9)",
        "resize",
        "lsj(size=64",
        "hflip(p=0.5, 0.2)",
        "",
        "s1 || s2",
        "hflip(1,2)",
    ] {
        assert!(parse_pipeline(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn toml_pipelines() {
    let t = r#"
        [[op]]
        name = "randaugment"
        n = 2
        m = 10
        [[op]]
        name = "hflip"
        [[op]]
        name = "lsj"
        min = 0.5
        max = 2.0
        size = [64, 64]
        pad = 32
    "#;
    let a = parse_toml(t).unwrap();
    let b = parse_pipeline("s4(size=64,pad=32)").unwrap();
    for seed in 0..10 {
        assert_eq!(run(&a, seed), run(&b, seed));
    }
    let p = parse_toml("pipeline = \"s1(size=32x16)\"").unwrap();
    assert_eq!(run(&p, 0).image.width, 128);
    let e = parse_toml("[[op]]\nname = \"lsj\"\nsize = 64\nscale = 2").unwrap_err();
    assert!(e.item.contains("op[0]") && e.msg.contains("'scale'"), "{e}");
    let e = parse_toml("steps = 3").unwrap_err();
    assert!(e.item.contains("steps"), "{e}");
    assert!(parse_toml("[[op]]\nname = \"nope\"")
        .unwrap_err()
        .to_string()
        .contains("nope"));
    assert!(parse_toml("[[op]]\nsize = 3").is_err());
    assert!(parse_toml("not toml [").is_err());
}

fn dataset() -> Arc<InMemory> {
    let samples = (0..13)
        .map(|i| {
            let mut s = sample(
                40 + i % 5,
                30 + i % 3,
                3,
                3,
                MaskKind::Ragged,
                i as u64,
                false,
            );
            s.image_id = i as u64;
            s
        })
        .collect();
    Arc::new(InMemory {
        samples,
        names: vec![],
    })
}

fn load(workers: usize, seed: u64) -> Vec<Sample> {
    let p = parse_pipeline("s4(size=48,pad=16)").unwrap();
    let loader = Loader::new(
        dataset(),
        LoaderConfig {
            batch_size: 3,
            workers,
            seed,
            ..Default::default()
        },
    )
    .with_transform(p.into_transform());
    loader.epoch(2).flat_map(|b| b.unwrap()).collect()
}

#[test]
fn same_output_on_any_thread_count() {
    let a = load(0, 7);
    assert_eq!(a.len(), 13);
    assert_eq!(a, load(3, 7));
    assert_ne!(a, load(0, 8), "another seed gives other samples");
    // A transform made from a shared pipeline agrees with applying it by hand.
    let t = to_transform(Arc::new(parse_pipeline("s3(size=48,pad=16)").unwrap()));
    let ds = dataset();
    let s = ds.get(4).unwrap();
    let x = t(s.clone(), &mut Rng::for_sample(1, 0, 4)).unwrap();
    let mut y = s;
    parse_pipeline("s3(size=48,pad=16)")
        .unwrap()
        .apply(&mut y, &mut Rng::for_sample(1, 0, 4));
    assert_eq!(x, y);
}
