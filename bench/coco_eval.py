#!/usr/bin/env python3
"""COCO bbox evaluation benchmark: `pupil eval detection` vs pycocotools vs faster-coco-eval.

Builds a synthetic COCO-like set (default 5,000 images, the 80 COCO category ids 1..90 with
gaps, a few GT boxes per image with some crowd regions, 100 detections per image: jittered
copies of GT plus false positives, scores rounded to 2 decimals so ties exist), writes
gt.json / dt.json to a temporary folder, times the three evaluators on the same files, checks
that their 12 stats agree to 1e-9 and prints a table.

    cargo build --release -p pupil-cli
    /work/venv/bin/python bench/coco_eval.py [--images 5000] [--seed 0] [--keep DIR]

Times are wall-clock: for pupil the whole process (JSON parsing included); for the Python
libraries COCO(gt) + loadRes(dt) + evaluate + accumulate + summarize in this process.
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# COCO's 80 category ids (1..90 with gaps).
COCO_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
]
SIZES = [(640, 480), (480, 640), (640, 427), (500, 375), (800, 600)]


def r2(v):
    return round(float(v), 2)


def make_box(rng, w, h):
    """A box inside the image; log-uniform side so small / medium / large all occur."""
    bw = float(np.exp(rng.uniform(np.log(4), np.log(0.8 * w))))
    bh = float(np.clip(bw * np.exp(rng.normal(0, 0.4)), 3, 0.9 * h))
    x = rng.uniform(0, w - bw)
    y = rng.uniform(0, h - bh)
    return [r2(x), r2(y), r2(bw), r2(bh)]


def jitter(rng, b, s):
    x, y, w, h = b
    return [
        r2(x + rng.normal(0, s * w)),
        r2(y + rng.normal(0, s * h)),
        r2(max(1.0, w * np.exp(rng.normal(0, s)))),
        r2(max(1.0, h * np.exp(rng.normal(0, s)))),
    ]


def build(n_images, dets_per_image, seed):
    rng = np.random.default_rng(seed)
    # Non-contiguous image ids, listed in shuffled order.
    img_ids = rng.choice(np.arange(1, 20 * n_images), size=n_images, replace=False)
    images, anns, dets = [], [], []
    ann_id = 1
    for img_id in img_ids:
        w, h = SIZES[rng.integers(len(SIZES))]
        images.append({"id": int(img_id), "width": w, "height": h, "file_name": f"{img_id:012d}.jpg"})
        n_gt = int(rng.integers(1, 14))
        img_cats = rng.choice(COCO_IDS, size=int(rng.integers(1, 5)), replace=False)
        gts = []
        for _ in range(n_gt):
            b = make_box(rng, w, h)
            crowd = int(rng.random() < 0.02)
            cat = int(rng.choice(img_cats))
            x, y, bw, bh = b
            anns.append({
                "id": ann_id, "image_id": int(img_id), "category_id": cat, "bbox": b,
                # Mask-like area: smaller than the box, as in real COCO.
                "area": r2(bw * bh * rng.uniform(0.55, 1.0)), "iscrowd": crowd,
                "segmentation": [[x, y, r2(x + bw), y, r2(x + bw), r2(y + bh), x, r2(y + bh)]],
            })
            ann_id += 1
            gts.append((b, cat))
        img_dets = []
        for b, cat in gts:
            # 0-3 jittered copies per GT, sometimes with another category.
            for _ in range(int(rng.integers(0, 4))):
                c = cat if rng.random() < 0.85 else int(rng.choice(COCO_IDS))
                img_dets.append((jitter(rng, b, rng.uniform(0.02, 0.25)), c, r2(rng.uniform(0.3, 1.0))))
        while len(img_dets) < dets_per_image:
            # Background false positives, half on the image's categories.
            c = int(rng.choice(img_cats)) if rng.random() < 0.5 else int(rng.choice(COCO_IDS))
            img_dets.append((make_box(rng, w, h), c, r2(rng.uniform(0.0, 0.6))))
        for b, c, s in img_dets[:dets_per_image]:
            dets.append({"image_id": int(img_id), "category_id": c, "bbox": b, "score": s})
    order = rng.permutation(len(COCO_IDS))
    cats = [{"id": COCO_IDS[i], "name": f"class_{COCO_IDS[i]}", "supercategory": "thing"} for i in order]
    gt = {"info": {"description": f"synthetic benchmark, seed {seed}"}, "licenses": [],
          "images": images, "annotations": anns, "categories": cats}
    return gt, dets


def run_pupil(binary, gt, dt):
    t0 = time.perf_counter()
    p = subprocess.run([binary, "eval", "detection", "--gt", gt, "--dt", dt, "--json"],
                       capture_output=True, text=True)
    t = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"pupil failed: {p.stderr}")
    out = json.loads(p.stdout)
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    return t, [out[n] for n in names]


def run_python(coco_cls, eval_cls, gt, dt):
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(gt)
        coco_dt = coco_gt.loadRes(dt)
        e = eval_cls(coco_gt, coco_dt, iouType="bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return time.perf_counter() - t0, [float(v) for v in e.stats]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pupil", default=str(Path(__file__).resolve().parent.parent / "target/release/pupil"))
    ap.add_argument("--keep", help="write gt.json / dt.json here and keep them")
    ap.add_argument("--skip-pycocotools", action="store_true", help="it takes minutes")
    args = ap.parse_args()
    if not os.path.exists(args.pupil):
        sys.exit(f"{args.pupil} not found: run `cargo build --release -p pupil-cli` first")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        gt, dets = build(args.images, args.dets, args.seed)
        gt_path, dt_path = str(out / "gt.json"), str(out / "dt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(dt_path, "w") as f:
            json.dump(dets, f)
        print(f"built {len(gt['images'])} images, {len(gt['annotations'])} GT "
              f"({sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(dets)} detections, "
              f"{len(gt['categories'])} categories in {time.perf_counter() - t0:.1f} s; "
              f"gt.json {os.path.getsize(gt_path) / 1e6:.1f} MB, dt.json {os.path.getsize(dt_path) / 1e6:.1f} MB")
        del gt, dets

        results = {}
        results["pupil"] = run_pupil(args.pupil, gt_path, dt_path)
        import faster_coco_eval
        from faster_coco_eval import COCO as FCOCO, COCOeval_faster
        results[f"faster-coco-eval {faster_coco_eval.__version__}"] = run_python(FCOCO, COCOeval_faster, gt_path, dt_path)
        if not args.skip_pycocotools:
            import pycocotools
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
            ver = getattr(pycocotools, "__version__", "")
            results[f"pycocotools {ver}".strip()] = run_python(COCO, COCOeval, gt_path, dt_path)

    ref_name, (_, ref) = next(iter(results.items()))
    ok = True
    for name, (_, stats) in results.items():
        diff = max(abs(a - b) for a, b in zip(stats, ref))
        if diff > 1e-9:
            ok = False
            print(f"MISMATCH {name} vs {ref_name}: max |diff| = {diff:.3g}\n  {stats}\n  {ref}")
    print(f"\nstats ({'identical to 1e-9 across all' if ok else 'DIFFER'}): "
          + ", ".join(f"{v:.4f}" for v in ref))
    fastest = min(t for t, _ in results.values())
    print(f"\n| evaluator | wall time (s) | vs fastest | max abs stat diff vs {ref_name} |\n|---|---:|---:|---:|")
    for name, (t, stats) in results.items():
        diff = max(abs(a - b) for a, b in zip(stats, ref))
        print(f"| {name} | {t:.2f} | {t / fastest:.1f}x | {diff:.3g} |")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
