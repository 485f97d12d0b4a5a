//! Nothing lost, nothing panics, end to end: the binary killed with SIGKILL at many points of
//! `train`, `self-train`, `experiment` and sharded `pseudo-label` resumes to bit-identical
//! results; non-finite steps are skipped and stop the run before a NaN is written; one
//! writer per run folder; a failed write keeps the last checkpoint; runs give the same bits
//! on one thread or two. Every run here uses one thread (as the README says resume tests do).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{cmd, fails, ok_logs as ok, run, s, tiny_config};

fn tiny(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, tiny_config(30, "log_every = 1\n")).unwrap();
    p
}

/// Starts `pupil args` and kills it with SIGKILL as soon as `when()` holds; `false` when the
/// run ended first (the kill point was missed).
fn kill_when(args: &[&str], when: impl Fn() -> bool) -> bool {
    let mut child = cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if when() {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            return status.code().is_none();
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "pupil {args:?} hangs"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Whether `dir` holds a temporary of a file whose name starts with `prefix`.
fn writing(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&format!(".{prefix}")) && n.ends_with(".tmp")
        })
    })
}

fn latest_step(out: &Path) -> Option<u64> {
    let t = std::fs::read_to_string(out.join("checkpoints/latest.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&t).ok()?["step"].as_u64()
}

/// The training state in a checkpoint's header.
fn state(p: &Path) -> serde_json::Value {
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    serde_json::from_str(h["__metadata__"]["pupil"].as_str().unwrap()).unwrap()
}

fn same_weights(a: &Path, b: &Path, what: &str) {
    let (x, y) = (
        pupil_testkit::safetensors_bits(a),
        pupil_testkit::safetensors_bits(b),
    );
    assert_eq!(x.len(), y.len(), "{what}");
    for ((na, va), (nb, vb)) in x.iter().zip(&y) {
        assert_eq!(na, nb, "{what}");
        assert!(va == vb, "{what}: {na} differs");
    }
}

/// A killed run's folder: latest.json (if any) names a checkpoint that loads.
fn consistent(out: &Path) {
    if let Some(step) = latest_step(out) {
        let p = out.join(format!("checkpoints/step-{step:07}.safetensors"));
        pupil_testkit::safetensors_bits(&p);
    }
}

/// No temporaries anywhere under `dir`.
fn no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            no_temporaries(&p);
        } else {
            assert!(
                !p.to_string_lossy().ends_with(".tmp"),
                "{} left",
                p.display()
            );
        }
    }
}

/// The steps of metrics.jsonl's training records, in order.
fn logged_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole lines"))
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

type Cond = Box<dyn Fn(&Path) -> bool>;

/// (name, condition on the run folder) for the kill points of one `pupil train`.
fn train_kill_points() -> Vec<(&'static str, Cond)> {
    vec![
        ("at start", Box::new(|o: &Path| o.join("run.lock").exists())),
        (
            "mid-training",
            Box::new(|o: &Path| latest_step(o).is_some_and(|s| s >= 10)),
        ),
        (
            "writing a checkpoint",
            Box::new(|o: &Path| writing(&o.join("checkpoints"), "step-")),
        ),
        (
            "writing latest.json",
            Box::new(|o: &Path| writing(&o.join("checkpoints"), "latest.json")),
        ),
        (
            "writing the model",
            Box::new(|o: &Path| writing(o, "model.safetensors")),
        ),
    ]
}

#[test]
fn train_killed_anywhere_resumes_to_the_same_weights() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let full = d.path().join("full");
    ok(&["train", "--config", s(&cfg), "--out", s(&full)]);
    let args = |out: &Path| -> Vec<String> {
        ["train", "--config", s(&cfg), "--out", s(out)]
            .map(String::from)
            .to_vec()
    };
    let mut report = Vec::new();
    for (k, (name, cond)) in train_kill_points().into_iter().enumerate() {
        let mut landed = 0;
        for attempt in 0..4 {
            let out = d.path().join(format!("cut-{k}-{attempt}"));
            let a = args(&out);
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            if !kill_when(&a, || cond(&out)) {
                continue;
            }
            landed += 1;
            consistent(&out);
            let log = ok(&a);
            assert!(log.contains("trained 30 steps"), "{name}: {log}");
            same_weights(
                &full.join("model.safetensors"),
                &out.join("model.safetensors"),
                name,
            );
            assert_eq!(logged_steps(&out), logged_steps(&full), "{name}");
            no_temporaries(&out);
            if landed == 2 {
                break;
            }
        }
        report.push(format!("{name}: {landed} landed"));
        if ["at start", "mid-training", "writing a checkpoint"].contains(&name) {
            assert!(landed > 0, "no kill landed {name}: {report:?}");
        }
    }
    // killed twice in one folder, then resumed
    let out = d.path().join("twice");
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    for at in [10, 20] {
        assert!(kill_when(&a, || latest_step(&out).is_some_and(|s| s >= at)));
    }
    ok(&a);
    same_weights(
        &full.join("model.safetensors"),
        &out.join("model.safetensors"),
        "twice",
    );
    eprintln!("kill points: {report:?}");
}

#[test]
fn f16_runs_resume_with_their_loss_scale() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let args = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = ["train", "--config", s(&cfg), "--out", s(out)]
            .map(String::from)
            .to_vec();
        v.extend(["--set", "optim.precision=f16", "--set", "optim.steps=12"].map(String::from));
        v
    };
    let full = d.path().join("full");
    let a = args(&full);
    ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let out = d.path().join("cut");
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    assert!(kill_when(&a, || latest_step(&out).is_some_and(|s| s >= 5)));
    ok(&a);
    // the first overflow halves 65536; a resume from 65536 would overflow (and skip) again
    let header =
        |o: &Path| state(&o.join("checkpoints/step-0000012.safetensors"))["loss_scaler"].clone();
    assert!(header(&full)["scale"].as_f64().unwrap() < 65536.0);
    assert_eq!(header(&full), header(&out));
    same_weights(
        &full.join("model.safetensors"),
        &out.join("model.safetensors"),
        "f16",
    );
}

fn teacher(d: &Path) -> PathBuf {
    let cfg = tiny(d);
    let out = d.join("teacher");
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "optim.steps=20",
    ]);
    out.join("model.safetensors")
}

#[test]
fn a_student_killed_anywhere_resumes_to_the_same_weights() {
    let d = tempfile::tempdir().unwrap();
    let t = teacher(d.path());
    let args = |out: &Path| -> Vec<String> {
        [
            "self-train",
            "--teacher",
            s(&t),
            "--out",
            s(out),
            "--set",
            "optim.steps=20",
            "--set",
            "selftrain.score_threshold=0.05",
        ]
        .map(String::from)
        .to_vec()
    };
    let full = d.path().join("full");
    let a = args(&full);
    ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let student = |o: &Path| o.join("round-0/student");
    let points: Vec<(&str, Cond)> = vec![
        (
            "pseudo-labeling",
            Box::new(|o: &Path| {
                o.join("round-0/pseudo").exists() && !o.join("round-0/pseudo/pseudo.json").exists()
            }),
        ),
        (
            "student mid-training",
            Box::new(move |o: &Path| latest_step(&student(o)).is_some_and(|s| s >= 10)),
        ),
        (
            "writing a student checkpoint",
            Box::new(move |o: &Path| writing(&student(o).join("checkpoints"), "step-")),
        ),
    ];
    let mut landed = Vec::new();
    for (k, (name, cond)) in points.into_iter().enumerate() {
        for attempt in 0..3 {
            let out = d.path().join(format!("cut-{k}-{attempt}"));
            let a = args(&out);
            let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
            if !kill_when(&a, || cond(&out)) {
                continue;
            }
            consistent(&student(&out));
            ok(&a);
            same_weights(
                &student(&full).join("model.safetensors"),
                &student(&out).join("model.safetensors"),
                name,
            );
            let pj = |o: &Path| std::fs::read(o.join("round-0/pseudo/pseudo.json")).unwrap();
            assert_eq!(pj(&full), pj(&out), "{name}");
            landed.push(name);
            break;
        }
    }
    assert!(landed.contains(&"student mid-training"), "{landed:?}");
    eprintln!("student kill points landed: {landed:?}");
}

#[test]
fn an_experiment_killed_anywhere_resumes_to_the_same_results() {
    let d = tempfile::tempdir().unwrap();
    // TINY as the grid's base: every table goes under [base]
    let base = tiny_config(15, "log_every = 1\n")
        .replace("\n[", "\n[base.")
        .replace("task = \"detection\"", "[base]\ntask = \"detection\"");
    let exp = format!(
        "inits = [\"random\"]\nself_training = [false, true]\naugment = [\"s1\"]\nlabeled_fractions = [1.0]\nseeds = [0]\n{base}\n[base.selftrain]\nscore_threshold = 0.05\n"
    );
    let f = d.path().join("exp.toml");
    std::fs::write(&f, exp).unwrap();
    let args = |out: &Path| -> Vec<String> {
        ["experiment", "--config", s(&f), "--out", s(out)]
            .map(String::from)
            .to_vec()
    };
    let full = d.path().join("full");
    ok(&args(&full).iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let sup = |o: &Path| o.join("random-s1-f1-seed0-supervised");
    let st = |o: &Path| o.join("random-s1-f1-seed0-self-training/round-0/student");
    let out = d.path().join("cut");
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    assert!(kill_when(&a, || latest_step(&sup(&out)).is_some_and(|s| s >= 5)));
    assert!(kill_when(&a, || latest_step(&st(&out)).is_some_and(|s| s >= 5)));
    ok(&a);
    for m in [sup, st] {
        same_weights(
            &m(&full).join("model.safetensors"),
            &m(&out).join("model.safetensors"),
            "experiment arm",
        );
    }
    let metrics = |o: &Path| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(o.join("results.json")).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["metrics"].clone())
            .collect()
    };
    assert_eq!(metrics(&full), metrics(&out));
}

fn pseudo_args<'a>(t: &'a Path, out: &'a Path, shard: &'a str, images: &'a str) -> Vec<&'a str> {
    vec![
        "pseudo-label",
        "--teacher",
        s(t),
        "--images",
        images,
        "--out",
        s(out),
        "--score-threshold",
        "0.05",
        "--shard",
        shard,
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_killed_shard_reruns_and_the_merge_holds_every_image_once() {
    let d = tempfile::tempdir().unwrap();
    let t = teacher(d.path());
    let img = "digits:unlabeled";
    let full = d.path().join("full");
    ok(&pseudo_args(&t, &full, "0/2", img));
    ok(&pseudo_args(&t, &full, "1/2", img));
    let half = d.path().join("half");
    ok(&pseudo_args(&t, &half, "0/2", img));
    let shard1 = |o: &Path| o.join("shard-00001-of-00002.json");
    let mut landed = 0;
    let points: Vec<Box<dyn Fn(&Path, Instant) -> bool>> = vec![
        Box::new(|_, t0| t0.elapsed() > Duration::from_millis(30)),
        Box::new(|_, t0| t0.elapsed() > Duration::from_millis(120)),
        Box::new(|o, _| writing(o, "shard-00001")),
        Box::new(|o, _| writing(o, "manifest")),
        Box::new(|o, _| writing(o, "pseudo.json")),
    ];
    for (k, cond) in points.iter().enumerate() {
        let out = d.path().join(format!("cut-{k}"));
        copy_dir(&half, &out);
        let a = pseudo_args(&t, &out, "1/2", img);
        let t0 = Instant::now();
        if !kill_when(&a, || cond(&out, t0)) {
            continue;
        }
        landed += 1;
        ok(&a);
        assert_eq!(
            std::fs::read(shard1(&full)).unwrap(),
            std::fs::read(shard1(&out)).unwrap()
        );
        let merged: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("pseudo.json")).unwrap()).unwrap();
        let ids: Vec<u64> = merged["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "every image once");
        assert_eq!(
            std::fs::read(full.join("pseudo.json")).unwrap(),
            std::fs::read(out.join("pseudo.json")).unwrap()
        );
        no_temporaries(&out);
    }
    assert!(landed >= 2, "{landed} kills landed");
    eprintln!("pseudo-label kills landed: {landed} of {}", points.len());

    // another teacher: the shard is labeled again and the manifest names it
    let other = d.path().join("other.safetensors");
    let mut bytes = std::fs::read(&t).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1; // a different last weight
    std::fs::write(&other, bytes).unwrap();
    let log = ok(&pseudo_args(&other, &half, "0/2", img));
    assert!(log.contains("labeling it again"), "{log}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(half.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["teacher"], s(&other));
    assert_eq!(
        m["done"],
        serde_json::json!([0]),
        "shard 1 was labeled by the first"
    );
}

#[test]
fn an_unreadable_image_is_skipped_named_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let t = teacher(d.path());
    let exp = d.path().join("exp");
    ok(&[
        "data",
        "export",
        "--split",
        "unlabeled",
        "--count",
        "4",
        "--out",
        s(&exp),
    ]);
    let imgs = exp.join("coco/images");
    let cut = imgs.join("000002.png");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = d.path().join("pl");
    let log = ok(&pseudo_args(&t, &out, "0/1", s(&imgs)));
    assert!(
        log.contains("WARNING") && log.contains("000002.png"),
        "{log}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        (m["images"].as_u64(), m["skipped"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(m["skipped_images"][0]["error"]
        .as_str()
        .unwrap()
        .contains("000002.png"));
    // the student trains on the other three
    let st = d.path().join("st");
    ok(&[
        "self-train",
        "--teacher",
        s(&t),
        "--out",
        s(&st),
        "--set",
        "optim.steps=2",
        "--set",
        &format!("selftrain.unlabeled={}", s(&imgs)),
    ]);
}

#[test]
fn non_finite_steps_are_skipped_and_stop_the_run_before_a_nan_is_written() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let out = d.path().join("nan");
    let e = fails(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "optim.lr_per_256=10000",
        "--set",
        "optim.warmup_steps=0",
        "--set",
        "optim.checkpoint_every=1",
        "--set",
        "optim.max_nonfinite_steps=3",
    ]);
    assert!(
        e.contains("not finite 3 steps in a row") && e.contains("optim.max_nonfinite_steps"),
        "{e}"
    );
    assert!(!out.join("model.safetensors").exists());
    let mut files = 0;
    for f in std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .flatten()
    {
        if f.path().extension().is_some_and(|x| x == "safetensors") {
            files += 1;
            for (n, v) in pupil_testkit::safetensors_bits(&f.path()) {
                assert!(
                    v.iter().all(|&b| f32::from_bits(b).is_finite()),
                    "{n} in {:?}",
                    f.path()
                );
            }
        }
    }
    assert!(files > 0);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        log.contains("\"skipped\":true") && log.contains("\"skipped_steps\":3"),
        "{log}"
    );
}

#[test]
fn one_writer_per_run_folder() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let out = d.path().join("run");
    let args = [
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "optim.steps=100000",
    ];
    let mut first = cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while latest_step(&out).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = format!("pid {}", first.id());
    let e = fails(&args);
    assert!(e.contains("in use") && e.contains(&pid), "{e}");
    let mut restart = args.to_vec();
    restart.push("--restart");
    let e = fails(&restart);
    assert!(e.contains("in use"), "{e}");
    assert!(
        latest_step(&out).is_some(),
        "--restart left the running run's checkpoints"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // the dead run's lock is taken over
    let log = ok(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "optim.steps=12",
    ]);
    assert!(log.contains("resumed from"), "{log}");
    assert!(
        log.contains("optim.steps: 100000 -> 12"),
        "the changed config is named: {log}"
    );
}

#[test]
fn a_failed_write_keeps_the_last_checkpoint_and_stops() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let full = d.path().join("full");
    ok(&["train", "--config", s(&cfg), "--out", s(&full)]);
    let out = d.path().join("disk");
    let args = ["train", "--config", s(&cfg), "--out", s(&out)];
    assert!(kill_when(&args, || latest_step(&out).is_some_and(|s| s >= 10)));
    let step = latest_step(&out).unwrap();
    let ck = out.join(format!("checkpoints/step-{step:07}.safetensors"));
    let before = std::fs::read(&ck).unwrap();
    // files may not grow past 200 KB: the next checkpoint (1.6 MB) cannot be written
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 400; exec \"$0\" train --config '{}' --out '{}'",
            s(&cfg),
            s(&out)
        ))
        .arg(env!("CARGO_BIN_EXE_pupil"))
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("safetensors") && e.contains("too large"), "{e}");
    assert_eq!(latest_step(&out), Some(step), "latest.json still names it");
    assert_eq!(std::fs::read(&ck).unwrap(), before, "and it is intact");
    no_temporaries(&out);
    ok(&args);
    same_weights(
        &full.join("model.safetensors"),
        &out.join("model.safetensors"),
        "disk",
    );
}

#[test]
fn training_gives_the_same_bits_on_one_thread_or_two() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = d.path().join(format!("t{threads}"));
        // large enough for the convolutions to run in parallel
        let o = cmd(&[
            "train",
            "--config",
            s(&cfg),
            "--out",
            s(&out),
            "--set",
            "data.digits.image_size=128",
            "--set",
            "augment.size=128",
            "--set",
            "optim.batch_size=4",
            "--set",
            "optim.steps=6",
        ])
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        outs.push(out);
    }
    same_weights(
        &outs[0].join("model.safetensors"),
        &outs[1].join("model.safetensors"),
        "1 vs 2 threads",
    );
}

#[test]
fn bad_values_and_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let cfg = tiny(d.path());
    let out = d.path().join("x");
    for (set, key) in [
        ("optim.batch_size=0", "optim.batch_size"),
        ("backbone.depth=0", "backbone.depth"),
        ("augment.size=0", "augment.size"),
    ] {
        let e = fails(&["train", "--config", s(&cfg), "--out", s(&out), "--set", set]);
        assert!(e.contains(key), "{e}");
    }
    let e = fails(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "data.digits.train=1",
    ]);
    assert!(
        e.contains("Train split") && e.contains("fewer than one batch"),
        "{e}"
    );
    // a missing file: its OS error once
    let e = fails(&[
        "eval",
        "detection",
        "--gt",
        "/no/gt.json",
        "--dt",
        "/no/dt.json",
    ]);
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    // detections of a category the GT lacks: ignored as pycocotools does, said once
    let gt = d.path().join("gt.json");
    std::fs::write(&gt, r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
 "categories": [{"id": 5, "name": "x"}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "area": 100}]}"#).unwrap();
    let dt = d.path().join("dt.json");
    std::fs::write(
        &dt,
        r#"[{"image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "score": 0.9},
 {"image_id": 1, "category_id": 8, "bbox": [1, 2, 10, 10], "score": 0.8},
 {"image_id": 1, "category_id": 9, "bbox": [1, 2, 10, 10], "score": 0.7}]"#,
    )
    .unwrap();
    let o = run(&[
        "eval",
        "detection",
        "--gt",
        s(&gt),
        "--dt",
        s(&dt),
        "--json",
    ]);
    assert!(o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(e.matches("WARNING").count(), 1, "{e}");
    assert!(e.contains("2 detections") && e.contains("dt.json"), "{e}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["AP"].as_f64().unwrap() - 1.0).abs() < 1e-12, "{v}");
}
