//! With the `cuda` feature, compiles `cuda/kernels.cu` to PTX with nvcc. The PTX targets a
//! virtual architecture (`PUPIL_CUDA_ARCH`, default compute_80), which the driver JIT-compiles
//! for the GPU at hand: one build serves A100 (sm_80), H100/H200 (sm_90) and newer.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=cuda/kernels.cu");
    println!("cargo:rerun-if-env-changed=PUPIL_CUDA_ARCH");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("pupil_kernels.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| {
        match std::env::var("CUDA_ROOT").or_else(|_| std::env::var("CUDA_PATH")) {
            Ok(root) => format!("{root}/bin/nvcc"),
            Err(_) => "nvcc".into(),
        }
    });
    let arch = std::env::var("PUPIL_CUDA_ARCH").unwrap_or_else(|_| "compute_80".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("-arch={arch}"), "-o"])
        .arg(&out)
        .arg("cuda/kernels.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("pupil-ops: {nvcc} failed on cuda/kernels.cu ({s})"),
        Err(e) => panic!(
            "pupil-ops: the `cuda` feature needs nvcc ({nvcc}: {e}); set CUDA_ROOT or NVCC \
             (scripts/cuda-build.sh makes a toolkit from PyPI wheels)"
        ),
    }
}
