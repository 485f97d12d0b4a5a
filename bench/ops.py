"""PyTorch reference timings for pupil-ops' depthwise convolution.

Times F.conv2d(groups=C) (PyTorch's depthwise path) forward and
forward+backward on the shapes of `cargo run --release -p pupil-ops --bin ops-bench`,
with 2 threads, and prints a markdown table to set beside that one.

Usage: python bench/ops.py [--quick]   (needs torch; --quick: batch-1 shapes only)
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

# (N, C, H=W, k, stride): EfficientNet-B0 depthwise layers, same as ops-bench.
SHAPES = [
    (8, 96, 112, 3, 2),
    (8, 144, 56, 3, 1),
    (8, 240, 28, 5, 1),
    (8, 672, 14, 5, 2),
    (1, 96, 112, 3, 2),
    (1, 144, 56, 3, 1),
    (1, 240, 28, 5, 1),
    (1, 672, 14, 5, 2),
]


def same_pad(size, k, s):
    """TF 'SAME' padding (left, right, top, bottom) for F.pad, as pupil_ops::same_padding."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    before = total // 2
    return (before, total - before, before, total - before)


def median_ms(fn):
    """Median over >= 3 runs or ~2 s after a warm-up, as ops-bench does."""
    fn()
    runs = []
    start = time.perf_counter()
    while len(runs) < 3 or (time.perf_counter() - start < 2.0 and len(runs) < 50):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) * 1e3


def main():
    quick = "--quick" in sys.argv
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| shape [N,C,H,W] | k/s | torch fwd ms | torch fwd+bwd ms |")
    print("|---|---|---|---|")
    for n, c, hw, k, s in SHAPES:
        if quick and n != 1:
            continue
        x = torch.randn(n, c, hw, hw)
        w = torch.randn(c, 1, k, k) * 0.1
        pad = same_pad(hw, k, s)

        def fwd():
            with torch.no_grad():
                F.conv2d(F.pad(x, pad), w, stride=s, groups=c)

        xg = x.clone().requires_grad_(True)
        wg = w.clone().requires_grad_(True)

        def train():
            y = F.conv2d(F.pad(xg, pad), wg, stride=s, groups=c)
            y.sum().backward()
            xg.grad = None
            wg.grad = None

        print(f"| [{n},{c},{hw},{hw}] | {k}/{s} | {median_ms(fwd):.1f} | {median_ms(train):.1f} |")


if __name__ == "__main__":
    main()
