#!/usr/bin/env bash
# The GPU check, one prepared run on a GPU machine (no Rust needed there): the CUDA kernel
# tests; the quickstart's detector trained on CUDA (f32, bf16) and on the CPU, validation APs
# side by side; the NAS-FPN segmenter on CUDA (f32, bf16); the data-parallel path (NCCL with
# world size 1, two ranks over TCP on one GPU, NCCL over 2 GPUs when present); then pupil vs
# PyTorch (bench/gpu.py).
#   scripts/cuda-build.sh build        # here: target-cuda/dist/{pupil,ops-cuda-tests,pupil-cuda.tar.xz}
#   scripts/gpu-check.sh [DIST] [--quick]   # on the GPU machine, from the repo root
# env: RESULTS (default: a temporary folder) receives the runs' JSON lines and logs.
set -u
dist=${1:-target-cuda/dist}; shift || true
py=${PYTHON:-python3}
res=${RESULTS:-$(mktemp -d)}; mkdir -p "$res"
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
step() { # step NAME SECONDS CMD...: runs CMD under a time limit, logs to $res/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name"
  local t0=$(date +%s%N)
  timeout "$limit" "$@" >"$res/$name.log" 2>&1; local rc=$?
  tail -n 4 "$res/$name.log"
  echo "-- $name: rc $rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  [[ $rc -eq 0 ]] || status=1
}
step kernels 90 "$dist/ops-cuda-tests" --test-threads=1
tmp=$(mktemp -d)
det=(--config scripts/gpu/detector.toml)
step det-cuda-f32 90 "$dist/pupil" train --device cuda:0 --out "$tmp/det-f32" "${det[@]}"
step det-cuda-bf16 90 "$dist/pupil" train --device cuda:0 --out "$tmp/det-bf16" "${det[@]}" --set optim.precision=bf16
step det-cpu-f32 120 "$dist/pupil" train --device cpu --out "$tmp/det-cpu" "${det[@]}"
seg=(--config scripts/gpu/segmenter.toml)
step seg-cuda-f32 60 "$dist/pupil" train --device cuda:0 --out "$tmp/seg-f32" "${seg[@]}"
step seg-cuda-bf16 60 "$dist/pupil" train --device cuda:0 --out "$tmp/seg-bf16" "${seg[@]}" --set optim.precision=bf16
for r in det-f32 det-bf16 det-cpu seg-f32 seg-bf16; do
  [[ -f $tmp/$r/outcome.json ]] && { echo "$r $(cat "$tmp/$r/outcome.json")" | head -c 600; echo; cp "$tmp/$r/outcome.json" "$res/outcome-$r.json"; }
done
small=("${det[@]}" --set optim.steps=20)
step ddp-nccl-1 45 env WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29512 \
  "$dist/pupil" train --device cuda:0 --out "$tmp/nccl1" "${small[@]}"
# Two ranks on one GPU: NCCL refuses a GPU twice, so they reduce over TCP through the host.
echo "== ddp-tcp-2"
pids=()
for r in 0 1; do
  WORLD_SIZE=2 RANK=$r LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29513 PUPIL_DIST_BACKEND=tcp \
    timeout 60 "$dist/pupil" train --device cuda:0 --out "$tmp/tcp2" "${small[@]}" >"$res/ddp-tcp-2-rank$r.log" 2>&1 &
  pids+=($!)
done
for r in 0 1; do
  wait "${pids[$r]}"; rc=$?; tail -n 3 "$res/ddp-tcp-2-rank$r.log"; echo "-- ddp-tcp-2 rank $r: rc $rc"
  [[ $rc -eq 0 ]] || status=1
done
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [[ $gpus -ge 2 ]]; then
  step ddp-nccl-2 240 "$dist/pupil" train --device cuda --nproc-per-node 2 --out "$tmp/ddp" "${small[@]}"
fi
echo "== pupil vs PyTorch"
timeout 420 "$py" bench/gpu.py --pupil "$dist/pupil" "$@" | tee "$res/gpu-bench.jsonl" || status=1
exit $status
