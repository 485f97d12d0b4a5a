//! End-to-end training through the binary: exact resume after a kill, config errors,
//! sharded pseudo-labeling that resumes without duplicates, prediction.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{ok, run, tiny_config};

fn config(dir: &Path, steps: usize) -> PathBuf {
    let p = dir.join(format!("tiny-{steps}.toml"));
    std::fs::write(&p, tiny_config(steps, "")).unwrap();
    p
}

#[test]
fn killed_run_resumes_to_the_same_weights() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 60);
    let full = d.path().join("full");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]);

    let cut = d.path().join("cut");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pupil"))
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            cut.to_str().unwrap(),
        ])
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let latest = cut.join("checkpoints/latest.json");
    let t0 = std::time::Instant::now();
    loop {
        let step = std::fs::read_to_string(&latest)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["step"].as_u64());
        if step.is_some_and(|s| s >= 10) {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !cut.join("model.safetensors").exists(),
        "the run must be killed before it ends"
    );
    let out = ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        cut.to_str().unwrap(),
    ]);
    assert!(out.contains("trained 60 steps"), "{out}");
    let (a, b) = (
        pupil_testkit::safetensors_bits(&full.join("model.safetensors")),
        pupil_testkit::safetensors_bits(&cut.join("model.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs after resume");
    }
    // the metrics log names the losses and throughput
    let log = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"lr\"") && log.contains("\"images_per_s\"") && log.contains("\"eval\""));
}

#[test]
fn config_errors_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 2);
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "optim.stepz=3",
        "--out",
        d.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("stepz") && !e.contains("panicked"), "{e}");
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "[optim]\nsteps = \"many\"\n").unwrap();
    let o = run(&[
        "train",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        d.path().join("y").to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("bad.toml") && !e.contains("panicked"),
        "{e}"
    );
    let o = run(&[
        "pseudo-label",
        "--teacher",
        bad.to_str().unwrap(),
        "--images",
        "digits:unlabeled",
        "--out",
        d.path().join("z").to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("bad.toml") && !e.contains("panicked"),
        "{e}"
    );
}

#[test]
fn pseudo_label_shards_resume_merge_and_self_train() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 20);
    let run = d.path().join("teacher");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let teacher = run.join("model.safetensors");
    let pl = d.path().join("pl");
    let args = |shard: &str| -> Vec<String> {
        [
            "pseudo-label",
            "--teacher",
            teacher.to_str().unwrap(),
            "--images",
            "digits:unlabeled",
            "--out",
            pl.to_str().unwrap(),
            "--score-threshold",
            "0.05",
            "--shard",
            shard,
            "--flip",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a: Vec<String> = args("1/2");
    ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(
        !pl.join("pseudo.json").exists(),
        "not merged before every shard is done"
    );
    let first = std::fs::read(pl.join("shard-00001-of-00002.json")).unwrap();
    let b: Vec<String> = args("0/2");
    let out = ok(&b.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(out.contains("all 2 shards done"), "{out}");
    // a rerun keeps the shard as it was
    ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read(pl.join("shard-00001-of-00002.json")).unwrap(),
        first
    );
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pl.join("pseudo.json")).unwrap()).unwrap();
    let ids: Vec<u64> = merged["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "every image once");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pl.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["done"], serde_json::json!([0, 1]));

    // a self-training round from the same teacher
    let st = d.path().join("student");
    let out = ok(&[
        "self-train",
        "--teacher",
        teacher.to_str().unwrap(),
        "--out",
        st.to_str().unwrap(),
        "--set",
        "optim.steps=6",
        "--set",
        "selftrain.score_threshold=0.05",
    ]);
    assert!(out.contains("trained 6 steps"), "{out}");
    let log = std::fs::read_to_string(st.join("round-0/student/metrics.jsonl")).unwrap();
    assert!(
        log.contains("\"L_h\"") && log.contains("\"avg_L_p\""),
        "{log}"
    );
    assert!(st.join("round-0/pseudo/quality.json").exists());

    // predict draws on an image
    let img = d.path().join("scene.png");
    ok(&[
        "data",
        "export",
        "--split",
        "val",
        "--count",
        "1",
        "--out",
        d.path().join("exp").to_str().unwrap(),
    ]);
    std::fs::copy(d.path().join("exp/coco/images/000001.png"), &img).unwrap();
    let vis = d.path().join("vis.png");
    ok(&[
        "predict",
        "--checkpoint",
        teacher.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--out",
        vis.to_str().unwrap(),
    ]);
    assert!(vis.exists());
}

/// Tiny budgets for grids built on the quickstart preset.
const TINY_SETS: [&str; 7] = [
    "base.optim.steps=8",
    "pretrain_steps=4",
    "base.data.digits.train=40",
    "base.data.digits.unlabeled=8",
    "base.data.digits.val=4",
    "base.selftrain.score_threshold=0.01",
    "base.selftrain.ignore_from=0.005",
];

#[test]
fn quickstart_writes_its_table_results_and_report() {
    // The real quickstart trains for minutes; this runs its pipeline with tiny budgets.
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("qs");
    let mut args = vec!["quickstart", "--out", out.to_str().unwrap()];
    for s in TINY_SETS {
        args.extend(["--set", s]);
    }
    let o = ok(&args);
    for row in [
        "Rand init",
        "Rand init + self-training",
        "Rand init + control",
        "Fashion-MNIST init",
        "Fashion-MNIST init + self-training",
        "Fashion-MNIST init + control",
    ] {
        assert!(o.contains(&format!("| {row} |")), "{o}");
    }
    let arms = read_results(&out);
    assert_eq!(arms.len(), 6);
    for a in &arms {
        assert!(
            a["metrics"]["AP"].is_number() && a["metrics"]["AP50"].is_number(),
            "{a}"
        );
    }
    check_controls(&arms);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "## Self-training against its control",
        "(a) Self-training gains",
        "(b) Pre-training",
        "(c) Self-training adds",
    ] {
        assert!(report.contains(part), "{part}: {report}");
    }
    assert!(out.join("plot_arms.png").exists() && out.join("results.csv").exists());
    // resumable: a second run reads every arm back
    let again = ok(&args);
    assert!(again.contains("| Rand init |"));
}

fn read_results(out: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    v.as_array().unwrap().clone()
}

/// Every self-training arm names a control that trained as many steps on as many images.
fn check_controls(arms: &[serde_json::Value]) {
    let students: Vec<&serde_json::Value> = arms
        .iter()
        .filter(|a| a["role"] == "self-training")
        .collect();
    assert!(!students.is_empty());
    for s in students {
        let c = arms
            .iter()
            .find(|a| a["name"] == s["control"])
            .unwrap_or_else(|| panic!("no control for {s}"));
        assert_eq!(c["role"], "control");
        assert_eq!(
            (c["steps"].clone(), c["images_seen"].clone()),
            (s["steps"].clone(), s["images_seen"].clone())
        );
        // 1:1 human and pseudo: twice the teacher's images per step
        let sup = arms.iter().find(|a| a["name"] == s["teacher"]).unwrap();
        let per_step = |a: &serde_json::Value| {
            a["images_seen"].as_u64().unwrap() / a["steps"].as_u64().unwrap()
        };
        assert_eq!(per_step(s), 2 * per_step(sup), "{s} {sup}");
    }
}

#[test]
fn a_grid_with_two_pretrained_inits_keeps_them_apart() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("grid");
    let mut args = vec![
        "experiment",
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
        "--set",
        "inits=[\"fashion\", \"digit-pool\"]",
        "--set",
        "augment=[\"s1\"]",
        "--set",
        "labeled_fractions=[1.0]",
    ];
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml"),
    )
    .unwrap();
    let cfg = d.path().join("exp.toml");
    std::fs::write(&cfg, text).unwrap();
    args.extend(["--config", cfg.to_str().unwrap()]);
    for s in TINY_SETS {
        args.extend(["--set", s]);
    }
    let o = ok(&args);
    assert!(
        o.contains("| Fashion-MNIST init |") && o.contains("| Digit-pool init |"),
        "{o}"
    );
    let arms = read_results(&out);
    assert_eq!(arms.len(), 6);
    let names: std::collections::BTreeSet<String> = arms
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for n in &names {
        assert!(out.join(n).join("result.json").exists(), "{n}");
    }
    for init in ["fashion", "digit-pool"] {
        assert!(out
            .join(format!("pretrain-{init}-seed0/model.safetensors"))
            .exists());
        assert!(out.join(format!("{init}-s1-f1-seed0-supervised")).is_dir());
    }
    check_controls(&arms);
    // a report of what has finished: one arm's result gone, nothing trained again
    let gone = "digit-pool-s1-f1-seed0-control";
    std::fs::remove_file(out.join(gone).join("result.json")).unwrap();
    let mut report_args = args.clone();
    report_args.push("--report-only");
    ok(&report_args);
    let arms = read_results(&out);
    assert_eq!(arms.len(), 5);
    assert!(arms.iter().all(|a| a["name"] != gone));
    assert!(!out.join(gone).join("result.json").exists());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**Partial grid**: 5 of the 6 planned arms"),
        "{md}"
    );
}

#[test]
fn a_grid_with_an_online_arm_shares_the_control_and_compares_the_teachers() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("grid");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml"),
    )
    .unwrap();
    let cfg = d.path().join("exp.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut args = vec![
        "experiment",
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "inits=[\"random\"]",
        "--set",
        "self_training=[false, \"offline\", \"online\"]",
        "--set",
        "base.selftrain.ema_decay=0.9",
    ];
    for s in TINY_SETS {
        args.extend(["--set", s]);
    }
    let o = ok(&args);
    assert!(o.contains("| Rand init + online self-training |"), "{o}");
    let arms = read_results(&out);
    assert_eq!(arms.len(), 4);
    check_controls(&arms);
    let role = |r: &str| arms.iter().find(|a| a["role"] == r).unwrap();
    let (off, on) = (role("self-training"), role("online"));
    assert_eq!(
        (off["mode"].clone(), on["mode"].clone()),
        ("offline".into(), "online".into())
    );
    // the same control, steps and images as the offline student (no burn-in here)
    for k in ["control", "steps", "images_seen", "student_init"] {
        assert_eq!(on[k], off[k], "{k}");
    }
    assert!(on["ema_teacher"]["primary"].is_number(), "{on}");
    assert!(on["pseudo"]["images"].as_u64() > Some(0), "{on}");
    let dir = out.join(on["name"].as_str().unwrap()).join("student");
    for f in ["model.safetensors", "teacher.safetensors", "online.json"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "## Offline vs online teacher",
        "| Rand init | S1 | 20% |",
        "Over 1 cell(s) the online teacher's student wins in",
        "- Rand init S1 20%: the ",
    ] {
        assert!(report.contains(part), "{part}: {report}");
    }
}

#[test]
fn self_train_online_needs_no_teacher_and_says_what_it_cannot_do() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 4);
    let run = d.path().join("online");
    let online = [
        "--set",
        "selftrain.mode=online",
        "--set",
        "selftrain.burn_in_steps=2",
    ];
    let mut args = vec!["self-train", "--config", cfg.to_str().unwrap()];
    args.extend(online);
    args.extend(["--out", run.to_str().unwrap()]);
    let o = ok(&args);
    assert!(
        o.contains("trained 4 steps") && o.contains("EMA teacher"),
        "{o}"
    );
    for f in ["model.safetensors", "teacher.safetensors", "online.json"] {
        assert!(run.join("student").join(f).exists(), "{f}");
    }
    let x = d.path().join("x");
    let fail = |extra: &[&str], want: &str| {
        let mut args = vec!["self-train", "--config", cfg.to_str().unwrap()];
        args.extend(extra);
        args.extend(["--out", x.to_str().unwrap()]);
        let o = common::run(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && e.contains(want) && !e.contains("panicked"),
            "{want}: {e}"
        );
    };
    // the offline teacher is a trained model; an online student from it needs the model too
    fail(&[], "--teacher");
    let from_teacher = [
        online[0],
        online[1],
        "--set",
        "selftrain.student_init=teacher",
    ];
    fail(&from_teacher, "--teacher");
    let seg = [online[0], online[1], "--set", "task=segmentation"];
    fail(&seg, "selftrain.mode");
    let long = [online[0], online[1], "--set", "selftrain.burn_in_steps=4"];
    fail(&long, "selftrain.burn_in_steps");
}

#[test]
fn segmentation_trains_and_pseudo_labels_pixels() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 4);
    let run = d.path().join("seg");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "task=segmentation",
        "--set",
        "segmenter.neck.channels=8",
        "--set",
        "segmenter.neck.repeats=1",
        "--set",
        "segmenter.head_convs=1",
        "--set",
        "segmenter.head_channels=8",
    ]);
    let teacher = run.join("model.safetensors");
    let pl = d.path().join("pl");
    let out = ok(&[
        "pseudo-label",
        "--teacher",
        teacher.to_str().unwrap(),
        "--images",
        "digits:unlabeled",
        "--out",
        pl.to_str().unwrap(),
        "--score-threshold",
        "0.0",
    ]);
    assert!(out.contains("10 label maps"), "{out}");
    let map = pupil_data::io::read_label_png(pl.join("labels/00000001.png")).unwrap();
    assert_eq!((map.width, map.height), (64, 64));
    assert!(
        map.data.iter().all(|&v| v < 11),
        "threshold 0 labels every pixel"
    );
    // a confidence no pixel reaches leaves everything ignored
    let pl2 = d.path().join("pl2");
    ok(&[
        "pseudo-label",
        "--teacher",
        teacher.to_str().unwrap(),
        "--images",
        "digits:unlabeled",
        "--out",
        pl2.to_str().unwrap(),
        "--score-threshold",
        "1.01",
    ]);
    let map = pupil_data::io::read_label_png(pl2.join("labels/00000001.png")).unwrap();
    assert!(map.data.iter().all(|&v| v == 255));
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

#[test]
fn data_parallel_training_runs_two_cpu_ranks_and_reports_a_failing_rank() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 6);
    let out = d.path().join("ddp");
    let port = free_port();
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--nproc-per-node",
        "2",
        "--master-port",
        &port,
    ];
    let stdout = ok(&args);
    assert!(stdout.contains("2 ranks finished"), "{stdout}");
    assert!(out.join("model.safetensors").exists());
    // rank 0's outcome, with its final evaluation, is the one on disk
    let outcome: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("outcome.json")).unwrap()).unwrap();
    assert!(outcome["final_metrics"].is_object(), "{outcome}");
    // rank 0 alone logs: one line per logged step, no duplicates
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(steps, vec![6], "{log}");
    // a job of one named by the environment takes the same data-parallel path
    let port = free_port();
    let o = Command::new(env!("CARGO_BIN_EXE_pupil"))
        .args(["train", "--config", cfg.to_str().unwrap(), "--out"])
        .arg(d.path().join("one"))
        .envs([
            ("WORLD_SIZE", "1"),
            ("RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
        ])
        .env("MASTER_PORT", &port)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.path().join("one/model.safetensors").exists());
    // the backend override: NCCL needs CUDA, and an unknown name is refused
    for (backend, msg) in [
        ("nccl", "PUPIL_DIST_BACKEND=nccl needs a CUDA device"),
        ("gloo", "PUPIL_DIST_BACKEND=gloo: expected nccl or tcp"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_pupil"))
            .args(["train", "--config", cfg.to_str().unwrap(), "--out"])
            .arg(d.path().join(backend))
            .envs([
                ("WORLD_SIZE", "1"),
                ("RANK", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("PUPIL_DIST_BACKEND", backend),
            ])
            .env("MASTER_PORT", free_port())
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // 3 ranks cannot split a batch of 2: every rank fails and the launcher says which
    let port = free_port();
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        d.path().join("bad").to_str().unwrap(),
        "--nproc-per-node",
        "3",
        "--master-port",
        &port,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("must be a multiple of the world size 3"),
        "{err}"
    );
    assert!(err.contains("exited with"), "{err}");
}

#[test]
fn half_precision_training_scales_the_loss() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 4);
    let out = d.path().join("f16");
    ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "optim.precision=f16",
        "--set",
        "optim.log_every=1",
    ]);
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let scales: Vec<f64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss_scale"].as_f64())
        .collect();
    assert_eq!(scales.len(), 4, "{log}");
    assert!(scales.iter().all(|&s| s >= 1.0 && s <= 65536.0));
    // the saved weights stay f32
    let t =
        candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(t.values().all(|v| v.dtype() == candle_core::DType::F32));
    // bf16 has no CPU matmul in candle: a clear error, not a crash
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        d.path().join("bf16").to_str().unwrap(),
        "--set",
        "optim.precision=bf16",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs a CUDA device"));
}

#[test]
fn cuda_devices_in_a_cpu_build_say_how_to_get_them() {
    if candle_core::utils::cuda_is_available() {
        return; // a CUDA build: tests/cuda.rs in pupil-ops covers the device
    }
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), 2);
    let o = run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        d.path().join("gpu").to_str().unwrap(),
        "--device",
        "cuda:0",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("built without CUDA") && e.contains("`cuda` feature"),
        "{e}"
    );
}
