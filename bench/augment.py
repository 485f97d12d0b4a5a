#!/usr/bin/env python3
"""Throughput of pupil-augment's `s1` and `s4` against equivalent albumentations pipelines.

Both run single-threaded in this one invocation on a 640x480 RGB image with 10 boxes, output
640x640. The Rust side is `crates/augment/src/bin/augment_bench.rs`; albumentations runs here
(OpenCV pinned to one thread).

    /work/venv/bin/python bench/augment.py [--seconds 3]

Needs albumentations (`pip install albumentations`).
"""
import argparse
import functools
import json
import os
import subprocess
import sys
import time

# One thread for every numeric library, before they load.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 640
FILL = (124, 116, 104)  # the mean colour pupil pads with


def rust_rates(seconds):
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "pupil-augment", "--bin", "augment-bench"],
        cwd=ROOT,
        check=True,
    )
    exe = os.path.join(ROOT, "target", "release", "augment-bench")
    out = subprocess.run(
        [exe, "--seconds", str(seconds), "--size", str(SIZE), "s1", "s4"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["pipeline"]: (r["images_per_sec"], r["images_per_cpu_sec"]) for r in rows}


def bench_inputs():
    """Same recipe as the Rust side: textured gradients and 10 boxes of 20-80 px."""
    rng = np.random.default_rng(42)
    h, w = 480, 640
    y, x = np.mgrid[0:h, 0:w]
    n = rng.integers(0, 32, size=(h, w))
    img = np.stack(
        [(x * 255 // w + n) % 256, (y * 255 // h + n) % 256, (x + y) * 128 // (w + h) + n], axis=-1
    ).astype(np.uint8)
    boxes = []
    for _ in range(10):
        x0, y0 = rng.uniform(0, 560), rng.uniform(0, 400)
        bw, bh = rng.uniform(20, 80), rng.uniform(20, 80)
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    return img, boxes, [i % 3 for i in range(10)]


def solarize_add(im, lut, **_):
    import cv2

    return cv2.LUT(im, lut)


def albumentations_pipelines():
    import albumentations as A
    import cv2

    cv2.setNumThreads(1)
    bbox = A.BboxParams(format="pascal_voc", label_fields=["labels"])

    def resize_crop_pad(lo, hi):
        # resize_and_crop_image: scale by r in [lo, hi] (the image already fits 640), pad, crop.
        return [
            A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0),
            A.PadIfNeeded(SIZE, SIZE, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=FILL, p=1.0),
            A.RandomCrop(SIZE, SIZE, p=1.0),
        ]

    s1 = A.Compose([A.HorizontalFlip(p=0.5)] + resize_crop_pad(0.8, 1.2), bbox_params=bbox)

    # RandAugment for detection at M=10: the same 16 ops, two per image.
    lut_add = np.array([min(i + 110, 255) if i < 128 else i for i in range(256)], dtype=np.uint8)
    ops = [
        A.AutoContrast(method="pil", p=1.0),
        A.Equalize(mode="pil", p=1.0),
        A.InvertImg(p=1.0),
        A.Affine(rotate=(-30, 30), fill=128, p=1.0),
        A.Posterize(num_bits=4, p=1.0),
        A.Solarize(threshold_range=(1.0, 1.0), p=1.0),
        A.ColorJitter(brightness=0, contrast=0, saturation=(1.9, 1.9), hue=0, p=1.0),
        A.ColorJitter(brightness=0, contrast=(1.9, 1.9), saturation=0, hue=0, p=1.0),
        A.ColorJitter(brightness=(1.9, 1.9), contrast=0, saturation=0, hue=0, p=1.0),
        A.Sharpen(alpha=(0.9, 0.9), lightness=(1.0, 1.0), method="kernel", kernel_size=3, p=1.0),
        A.Affine(shear={"x": (-16.7, 16.7), "y": (0, 0)}, fill=128, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-16.7, 16.7)}, fill=128, p=1.0),
        A.Affine(translate_px={"x": (-100, 100), "y": (0, 0)}, fill=128, p=1.0),
        A.Affine(translate_px={"x": (0, 0), "y": (-100, 100)}, fill=128, p=1.0),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(80, 80), hole_width_range=(80, 80), fill=128, p=1.0),
        A.Lambda(image=functools.partial(solarize_add, lut=lut_add), p=1.0),
    ]
    s4 = A.Compose(
        [A.SomeOf(ops, n=2, p=1.0), A.HorizontalFlip(p=0.5)] + resize_crop_pad(0.5, 2.0), bbox_params=bbox
    )
    return {"s1": s1, "s4": s4}, A.__version__


def albumentations_rates(seconds):
    img, boxes, labels = bench_inputs()
    pipes, version = albumentations_pipelines()
    rates = {}
    for name, pipe in pipes.items():
        for _ in range(5):
            pipe(image=img, bboxes=boxes, labels=labels)
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            out = pipe(image=img, bboxes=boxes, labels=labels)
            assert out["image"].shape == (SIZE, SIZE, 3)
            n += 1
        rates[name] = (n / (time.perf_counter() - start), n / (time.process_time() - cpu))
    return rates, version


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per pipeline, library and round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    args = ap.parse_args()
    best = {}

    def keep(lib, rates):
        for name, (wall, cpu) in rates.items():
            w, c = best.get((lib, name), (0.0, 0.0))
            best[(lib, name)] = (max(w, wall), max(c, cpu))

    version = "?"
    for _ in range(args.rounds):
        try:
            alb, version = albumentations_rates(args.seconds)
        except ImportError:
            sys.exit("albumentations is missing: pip install albumentations")
        keep("albumentations", alb)
        keep("pupil", rust_rates(args.seconds))
    print(f"single thread, 640x480 RGB, 10 boxes -> {SIZE}x{SIZE}; albumentations {version}; "
          f"best of {args.rounds} rounds of {args.seconds:g} s")
    print("| pipeline | pupil-augment img/s (per CPU s) | albumentations img/s (per CPU s) | ratio (CPU) |")
    print("|---|---|---|---|")
    for name in ("s1", "s4"):
        (pw, pc), (aw, ac) = best[("pupil", name)], best[("albumentations", name)]
        print(f"| {name} | {pw:.0f} ({pc:.0f}) | {aw:.0f} ({ac:.0f}) | {pw / aw:.2f}x ({pc / ac:.2f}x) |")


if __name__ == "__main__":
    main()
