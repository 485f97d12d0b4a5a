"""pupil vs PyTorch eager on one GPU, side by side in one run: EfficientNet-B0 (224 px, batch
64) and a RetinaNet ResNet-50 FPN (640 px, batch 8), inference and one training step (forward,
backward, SGD update), f32 and bf16; images/s, peak GPU memory and model FLOP utilisation.

    python bench/gpu.py --pupil target-cuda/dist/pupil [--quick]

PyTorch side: timm's efficientnet_b0 (torchvision's when timm is missing) and torchvision's
retinanet_resnet50_fpn, random init, torch.autocast(bfloat16) for bf16. pupil side: `pupil
bench` with the same shapes, `optim.precision=bf16` for bf16. Each configuration runs in its own
process; peak memory is torch.cuda.max_memory_allocated for PyTorch and the GPU's used memory
sampled after every step for pupil (which includes the CUDA context, ~500 MB).
"""
import argparse, json, subprocess, sys

TORCH = r'''
import sys, time, json, torch
model_name, mode, batch, size, precision, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
dev = torch.device("cuda:0")
torch.backends.cudnn.benchmark = True
if model_name == "efficientnet-b0":
    try:
        import timm
        m = timm.create_model("efficientnet_b0", drop_rate=0.2, drop_path_rate=0.2)
    except ImportError:
        import torchvision
        m = torchvision.models.efficientnet_b0()
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.arange(batch, device=dev) % 1000
    def loss_fn(m):
        return torch.nn.functional.cross_entropy(m(x), y)
    def infer(m):
        return m(x).float().sum()
else:
    import torchvision
    from torchvision.models.detection import retinanet_resnet50_fpn
    m = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80, min_size=size, max_size=size)
    imgs = [torch.rand(3, size, size, device=dev) for _ in range(batch)]
    f = float(size)
    tg = [{"boxes": torch.tensor([[.25*f,.25*f,.5*f,.5*f],[.1*f,.6*f,.4*f,.9*f],[.55*f,.1*f,.95*f,.45*f]], device=dev),
           "labels": torch.tensor([i % 7, 1, 2], device=dev)} for i in range(batch)]
    def loss_fn(m):
        return sum(m(imgs, tg).values())
    def infer(m):
        return sum(d["scores"].sum() for d in m(imgs))
m = m.to(dev)
opt = torch.optim.SGD(m.parameters(), lr=0.01)
ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else (lambda: torch.autocast("cuda", enabled=False))
ts = []
for i in range(iters + 3):
    torch.cuda.synchronize(); t = time.perf_counter()
    if mode == "infer":
        m.eval()
        with torch.no_grad(), ctx():
            infer(m).item()
    else:
        m.train(); opt.zero_grad()
        with ctx():
            l = loss_fn(m)
        l.backward(); opt.step(); l.item()
    torch.cuda.synchronize()
    if i >= 3:
        ts.append((time.perf_counter() - t) * 1e3)
ts.sort(); ms = ts[len(ts) // 2]
peak = torch.cuda.max_memory_allocated()
# FLOPs of one forward pass (convolutions and matrix products), per image
from torch.utils.flop_counter import FlopCounterMode
m.eval()
with torch.no_grad(), FlopCounterMode(display=False) as fc:
    infer(m)
print(json.dumps({"impl": "torch", "ms": round(ms, 2), "img_per_s": round(batch * 1e3 / ms, 1),
                  "peak_mb": round(peak / 2**20), "gflop_per_img": round(fc.get_total_flops() / batch / 1e9, 2)}))
'''

CASES = [
    # name, pupil --set args, batch, size, classes
    ("efficientnet-b0", ["task=classification", "backbone.name=efficientnet-b0", "data.size_divisor=32"], 64, 224, 1000),
    ("retinanet-r50", ["task=detection", "backbone.name=resnet-50", "data.size_divisor=128"], 8, 640, 80),
]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pupil", required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="f32 only, 5 iterations")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the GPU's dense bf16 peak, for model FLOP utilisation (H100/H200 SXM: 989)")
    a = ap.parse_args()
    iters = 5 if a.quick else a.iters
    rows = []
    for name, sets, batch, size, classes in CASES:
        for precision in (["f32"] if a.quick else ["f32", "bf16"]):
            for mode in ["infer", "train"]:
                cmd = [a.pupil, "bench", "--device", "cuda:0", "--mode", mode, "--batch", str(batch),
                       "--size", str(size), "--classes", str(classes), "--iters", str(iters),
                       "--set", f"optim.precision={precision}"]
                for s in sets:
                    cmd += ["--set", s]
                p = run(cmd)
                t = run([sys.executable, "-c", TORCH, name if name == "efficientnet-b0" else "retinanet",
                         mode, str(batch), str(size), precision, str(iters)])
                rows.append((name, precision, mode, batch, p, t))
                print(json.dumps({"case": [name, precision, mode], "pupil": p, "torch": t}), flush=True)
    # model FLOP utilisation: forward FLOPs per image (counted on PyTorch's model), x3 for a
    # training step, over the dense bf16 peak
    def mfu(r, mode, gflop):
        return f"{r['img_per_s'] * gflop * (3 if mode == 'train' else 1) / (a.peak_tflops * 1e3) * 100:.1f} %"
    print("| model | precision | mode | batch | pupil img/s | torch img/s | pupil/torch throughput | pupil MFU | torch MFU | pupil peak MB | torch peak MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, prec, mode, batch, p, t in rows:
        if "error" in p or "error" in t:
            print(f"| {name} | {prec} | {mode} | {batch} | {p.get('error', p.get('img_per_s'))} | {t.get('error', t.get('img_per_s'))} | - | - | - | - | - |")
            continue
        g = t["gflop_per_img"]
        print(f"| {name} | {prec} | {mode} | {batch} | {p['img_per_s']} | {t['img_per_s']} | "
              f"{p['img_per_s'] / t['img_per_s']:.2f}x | {mfu(p, mode, g)} | {mfu(t, mode, g)} | {p['peak_mb']:.0f} | {t['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
