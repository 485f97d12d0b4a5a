"""PyTorch reference timings for pupil-ops' convolutions.

Times F.conv2d forward and forward+backward on the shapes of
`cargo run --release -p pupil-ops --bin ops-bench`, with 2 threads: the
depthwise layers (groups=C, PyTorch's depthwise path) and the dense convs
(with a bias, as ops-bench gives them). Prints markdown tables to set beside
that one's.

Usage: python bench/ops.py [--quick] [depthwise] [dense]
(needs torch; --quick: batch-1 shapes only; naming a section runs only the named ones)
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

# (N, C_in, H=W, C_out, k, stride): dense convs, same as ops-bench's DENSE.
DENSE = [
    (8, 96, 32, 96, 3, 1),
    (8, 48, 64, 48, 3, 1),
    (8, 3, 224, 32, 3, 2),
    (8, 256, 16, 256, 3, 1),
    (8, 240, 28, 40, 1, 1),
    (1, 96, 32, 96, 3, 1),
    (1, 48, 64, 48, 3, 1),
    (1, 3, 224, 32, 3, 2),
    (1, 256, 16, 256, 3, 1),
    (1, 240, 28, 40, 1, 1),
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


def time_conv(x, w, b, pad, s, groups):
    """(fwd ms, fwd+bwd ms) of F.conv2d on F.pad(x); fwd+bwd takes the input and filter
    gradients, the bias (if any) being a constant as in ops-bench."""

    def fwd():
        with torch.no_grad():
            F.conv2d(F.pad(x, pad), w, b, stride=s, groups=groups)

    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)

    def train():
        y = F.conv2d(F.pad(xg, pad), wg, b, stride=s, groups=groups)
        y.sum().backward()
        xg.grad = None
        wg.grad = None

    return median_ms(fwd), median_ms(train)


def depthwise(quick):
    print("| shape [N,C,H,W] | k/s | torch fwd ms | torch fwd+bwd ms |")
    print("|---|---|---|---|")
    for n, c, hw, k, s in SHAPES:
        if quick and n != 1:
            continue
        x = torch.randn(n, c, hw, hw)
        w = torch.randn(c, 1, k, k) * 0.1
        f, t = time_conv(x, w, None, same_pad(hw, k, s), s, c)
        print(f"| [{n},{c},{hw},{hw}] | {k}/{s} | {f:.1f} | {t:.1f} |")


def dense(quick):
    print("| shape [N,C,H,W] -> C_out | k/s | torch fwd ms | torch fwd+bwd ms |")
    print("|---|---|---|---|")
    for n, c, hw, co, k, s in DENSE:
        if quick and n != 1:
            continue
        x = torch.randn(n, c, hw, hw)
        w = torch.randn(co, c, k, k) * 0.1
        b = torch.randn(co)
        f, t = time_conv(x, w, b, same_pad(hw, k, s), s, 1)
        print(f"| [{n},{c},{hw},{hw}] -> {co} | {k}/{s} | {f:.1f} | {t:.1f} |")


def main():
    quick = "--quick" in sys.argv
    named = [a for a in ("depthwise", "dense") if a in sys.argv]
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not named or "depthwise" in named:
        depthwise(quick)
    if not named or "dense" in named:
        dense(quick)


if __name__ == "__main__":
    main()
