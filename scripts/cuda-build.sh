#!/usr/bin/env bash
# Builds pupil with CUDA (and cuDNN, NCCL) on a machine without a GPU or a system CUDA.
# The toolkit comes from NVIDIA's PyPI wheels (CUDA 13.0, as PyTorch's cu13 wheels ship),
# so the binary links the same .so.13 libraries a PyTorch environment provides at run time.
#
#   scripts/cuda-build.sh [check|build] [FEATURES]
#     check  (default) compile everything, tests included, without running
#     build  build a stripped release `pupil` + the CUDA kernel tests into target-cuda/dist,
#            and pupil-cuda.tar.xz of both (~20 MB: the kernels' PTX compresses well) to carry
#   env: PUPIL_CUDA_HOME (default ./.cuda13) toolkit location; CUDA_COMPUTE_CAP for candle's
#        kernels (default 90 = H100/H200; 80 for A100); FEATURES default "cuda,cudnn,nccl".
#
# Running on a GPU machine: put the wheels' libraries on the loader path, e.g.
#   export LD_LIBRARY_PATH=$(python -c 'import nvidia,os;p=os.path.dirname(nvidia.__path__[0]);print(":".join(os.path.join(r,d) for r,ds,_ in os.walk(p+"/nvidia") for d in ds if d=="lib"))')
set -euo pipefail
mode=${1:-check}
features=${2:-${FEATURES:-cuda,cudnn,nccl}}
root=$(cd "$(dirname "$0")/.." && pwd)
home=${PUPIL_CUDA_HOME:-$root/.cuda13}
venv=$home/venv

if [[ ! -f $venv/.complete ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas==13.0.*" \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand" "nvidia-nccl-cu13" "nvidia-cudnn-cu13"
  touch "$venv/.complete"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tk=$home/toolkit
rm -rf "$tk"; mkdir -p "$tk/lib64"
ln -s "$site/nvidia/cu13/bin" "$tk/bin"
ln -s "$site/nvidia/cu13/include" "$tk/include"
ln -s "$site/nvidia/cu13/nvvm" "$tk/nvvm"
# Every shared library of the wheels, also under its unversioned name for the linker.
for f in "$site"/nvidia/*/lib/*.so.* "$site"/nvidia/cu13/lib/*.so.*; do
  [[ -e $f ]] || continue
  b=$(basename "$f"); ln -sf "$f" "$tk/lib64/$b"; ln -sf "$f" "$tk/lib64/${b%%.so.*}.so"
done
# libcuda comes with the driver, not a wheel: link against Debian's copy (non-free).
if [[ ! -e $tk/lib64/libcuda.so ]]; then
  drv=$home/driver
  if [[ ! -e $drv/libcuda.so.1 ]]; then
    mkdir -p "$drv"; tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download libcuda1 >/dev/null 2>&1 && dpkg -x libcuda1_*.deb x); then
      cp -a "$tmp"/x/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so* "$drv/"
    else
      # No non-free archive: a link-time stub with every driver entry point cuda.h names.
      # The GPU machine's driver provides the real libcuda.so.1 at run time.
      "$venv/bin/python" - "$tk/include/cuda.h" "$tmp/stub.c" <<'PY'
import re, sys
h = open(sys.argv[1]).read()
names = set(re.findall(r"\b(cu[A-Z]\w*)\s*\(", h)) | set(re.findall(r"#define\s+cu[A-Z]\w*\s+(cu[A-Z]\w*)", h))
open(sys.argv[2], "w").write("".join(f"int {n}(void) {{ return 999; }}\n" for n in sorted(names)))
PY
      cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$drv/libcuda.so.1" "$tmp/stub.c"
    fi
    rm -rf "$tmp"
  fi
  ln -sf "$drv/libcuda.so.1" "$tk/lib64/libcuda.so"; ln -sf "$drv/libcuda.so.1" "$tk/lib64/libcuda.so.1"
fi

export PATH=$tk/bin:$PATH CUDA_ROOT=$tk CUDA_PATH=$tk CUDA_HOME=$tk
export LIBRARY_PATH=$tk/lib64:${LIBRARY_PATH:-}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
cd "$root"
cli_features=$(echo "$features" | tr ',' '\n' | sed 's|^|pupil-cli/|' | paste -sd, -)
case $mode in
  check)
    cargo build --release --locked -p pupil-ops --features cuda --tests
    cargo build --release --locked -p pupil-cli --features "$features"
    cargo test --release --locked --workspace --features "$cli_features" --no-run ;;
  build)
    cargo build --release --locked -p pupil-cli --features "$features"
    mkdir -p "$CARGO_TARGET_DIR/dist"
    strip -o "$CARGO_TARGET_DIR/dist/pupil" "$CARGO_TARGET_DIR/release/pupil"
    cargo test --release --locked -p pupil-ops --features cuda --test cuda --no-run \
      --message-format=json | "$venv/bin/python" -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        shutil.copy(m["executable"], sys.argv[1])' "$CARGO_TARGET_DIR/dist/ops-cuda-tests"
    strip "$CARGO_TARGET_DIR/dist/ops-cuda-tests"
    tar -C "$CARGO_TARGET_DIR/dist" -cf - pupil ops-cuda-tests | xz -T0 -6 > "$CARGO_TARGET_DIR/dist/pupil-cuda.tar.xz" ;;
  *) echo "usage: $0 [check|build] [features]" >&2; exit 2 ;;
esac
