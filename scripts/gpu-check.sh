#!/usr/bin/env bash
# The GPU check, one prepared run on a GPU machine (no Rust needed there): the CUDA kernel
# tests, a 2-process NCCL smoke run when 2+ GPUs are present, then pupil vs PyTorch.
#   scripts/cuda-build.sh build        # here: target-cuda/dist/{pupil,ops-cuda-tests,pupil-cuda.tar.xz}
#   scripts/gpu-check.sh [DIST] [--quick]   # on the GPU machine, from the repo root
set -u
dist=${1:-target-cuda/dist}; shift || true
py=${PYTHON:-python3}
# The binaries travel compressed; Python's tarfile unpacks xz without the xz tool.
if [[ -f $dist/pupil-cuda.tar.xz && ! -x $dist/pupil ]]; then
  out=$(mktemp -d)
  "$py" -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$dist/pupil-cuda.tar.xz" "$out"
  dist=$out
fi
# CUDA 13 libraries from the environment's NVIDIA wheels (PyTorch's).
libs=$("$py" - <<'PY'
import os, glob
try:
    import nvidia
    roots = [os.path.dirname(p) for p in nvidia.__path__]
except ImportError:
    roots = []
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))} |
                      {d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "cu13", "lib"))})))
PY
)
export LD_LIBRARY_PATH=${libs}:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
status=0
echo "== CUDA kernel tests"
"$dist/ops-cuda-tests" --test-threads=1 || status=1
echo "== data-parallel code path on one GPU (NCCL, world size 1)"
tmp=$(mktemp -d)
small=(--set optim.steps=10 --set optim.batch_size=4 --set backbone.width=0.25 --set backbone.depth=0.1
       --set augment.size=128 --set data.digits.image_size=128 --set data.digits.train=32 --set data.digits.val=8)
WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29512 \
  "$dist/pupil" train --device cuda:0 --out "$tmp/one" "${small[@]}" || status=1
echo "== bf16 training on one GPU"
"$dist/pupil" train --device cuda:0 --out "$tmp/bf16" "${small[@]}" --set optim.precision=bf16 || status=1
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [[ $gpus -ge 2 ]]; then
  echo "== NCCL data parallel, 2 GPUs"
  "$dist/pupil" train --device cuda --nproc-per-node 2 --out "$tmp/ddp" "${small[@]}" || status=1
fi
echo "== pupil vs PyTorch"
"$py" bench/gpu.py --pupil "$dist/pupil" "$@" || status=1
exit $status
