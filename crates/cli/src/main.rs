//! The `pupil` command: a thin layer of argument parsing over the pupil crates.
use clap::{Parser, Subcommand};

mod cmd_augment;
mod cmd_data;
mod cmd_eval;
mod source;

#[derive(Parser)]
#[command(name = "pupil", version, about = "Pre-training vs self-training for detection and segmentation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export and preview datasets (the embedded digit scenes, COCO, VOC).
    Data(cmd_data::DataArgs),
    /// Score detections (COCO mAP) or label maps (mIoU).
    Eval(cmd_eval::EvalArgs),
    /// Draw a grid of augmented samples.
    Augment(cmd_augment::AugmentArgs),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Data(a) => cmd_data::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Augment(a) => cmd_augment::run(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
