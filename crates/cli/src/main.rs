//! The `pupil` command: a thin layer of argument parsing over the pupil crates.
use clap::{Parser, Subcommand};

// Tensors are large, short-lived allocations: mimalloc reuses them instead of mapping and
// zeroing fresh pages every time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd_augment;
mod cmd_bench;
mod cmd_data;
mod cmd_eval;
mod cmd_experiment;
mod cmd_plot;
mod cmd_predict;
mod cmd_pretrain;
mod cmd_pseudo;
mod cmd_train;
mod source;

#[derive(Parser)]
#[command(
    name = "pupil",
    version,
    about = "Pre-training vs self-training for detection and segmentation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export and preview datasets (the embedded digit scenes, COCO, VOC).
    Data(cmd_data::DataArgs),
    /// Score detections (COCO mAP), label maps (mIoU), or a saved model on a dataset.
    Eval(cmd_eval::EvalArgs),
    /// Draw a grid of augmented samples.
    Augment(cmd_augment::AugmentArgs),
    /// Train a detector, segmenter or classifier (resumes from the run folder's checkpoint).
    Train(cmd_train::TrainArgs),
    /// Classification pre-training of a backbone (Fashion-MNIST or the in-domain digit pool).
    Pretrain(cmd_pretrain::PretrainArgs),
    /// Label unlabeled images with a teacher, one shard per process.
    PseudoLabel(cmd_pseudo::PseudoArgs),
    /// Self-training: pseudo-label, then train a noised student on human + pseudo labels
    /// (`--set selftrain.mode=online`: an EMA teacher labels as the student trains).
    SelfTrain(cmd_pseudo::SelfTrainArgs),
    /// Run a model on one image and draw its boxes or masks.
    Predict(cmd_predict::PredictArgs),
    /// The pre-training vs self-training grid, with its table and plots.
    Experiment(cmd_experiment::ExperimentArgs),
    /// The paper's comparison on the embedded digit scenes, in minutes on a CPU.
    Quickstart(cmd_experiment::QuickstartArgs),
    /// Speed and memory of a model's inference or training step on synthetic images.
    Bench(cmd_bench::BenchArgs),
    /// Plot a run's loss parts, L_h and L_p, learning rate and validation metric over steps.
    Plot(cmd_plot::PlotArgs),
}

fn main() {
    pupil_ops::keep_freed_memory();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Data(a) => cmd_data::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Augment(a) => cmd_augment::run(a),
        Command::Train(a) => cmd_train::train(a),
        Command::Pretrain(a) => cmd_pretrain::run(a),
        Command::PseudoLabel(a) => cmd_pseudo::pseudo_label(a),
        Command::SelfTrain(a) => cmd_pseudo::self_train(a),
        Command::Predict(a) => cmd_predict::run(a),
        Command::Experiment(a) => cmd_experiment::run(a),
        Command::Quickstart(a) => cmd_experiment::quickstart(a),
        Command::Bench(a) => cmd_bench::run(a),
        Command::Plot(a) => cmd_plot::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
