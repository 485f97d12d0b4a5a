"""pupil vs PyTorch on CPU, side by side in one run: the paper's detectors and segmenters and
EfficientNet-B0, inference and one training step, images/s and peak resident memory.

    python bench/models.py --pupil target/release/pupil [--rounds 3] [--only retinanet-r50 ...]

pupil side: `pupil bench` (the path the trainer takes), random init. PyTorch side:
torchvision's retinanet_resnet50_fpn and deeplabv3_resnet50, RetinaNet on timm's
efficientnet_b0 features with torchvision's FPN (P3-P7, 256 channels) and head, timm's
efficientnet_b0. Both sides use 2 threads; every measurement runs in its own process (peak
memory is that process's VmHWM). Rounds alternate the two sides (the first side flips each
round) because this machine drifts by up to 2x from minute to minute; the table gives each
side's median over rounds with the spread (min-max) of the round figures.
"""
import argparse, json, statistics, subprocess, sys

TORCH = r'''
import sys, time, json, torch
name, mode, batch, size, iters, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(2)
torch.manual_seed(0)
f = float(size)
def det_targets():
    return [{"boxes": torch.tensor([[.25*f,.25*f,.5*f,.5*f],[.1*f,.6*f,.4*f,.9*f],[.55*f,.1*f,.95*f,.45*f]]),
             "labels": torch.tensor([i % 7, 1, 2])} for i in range(batch)]
if name.startswith("retinanet"):
    import torchvision
    from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn
    if name == "retinanet-r50":
        m = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80, min_size=size, max_size=size)
    else:
        import timm
        from collections import OrderedDict
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7
        class Body(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.body = timm.create_model("efficientnet_b0", features_only=True, out_indices=(2, 3, 4))
                self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), 256, extra_blocks=LastLevelP6P7(256, 256))
                self.out_channels = 256
            def forward(self, x):
                return self.fpn(OrderedDict((str(i), t) for i, t in enumerate(self.body(x))))
        m = RetinaNet(Body(), num_classes=80, min_size=size, max_size=size)
    imgs = [torch.rand(3, size, size) for _ in range(batch)]
    tg = det_targets()
    loss_fn = lambda: sum(m(imgs, tg).values())
    infer = lambda: sum(d["scores"].sum() for d in m(imgs))
elif name == "deeplab-r50":
    import torchvision
    from torchvision.models import resnet50
    from torchvision.models.segmentation.deeplabv3 import _deeplabv3_resnet
    # output stride 16 (dilation in the last stage only), as pupil's DeepLabv3+ default
    m = _deeplabv3_resnet(resnet50(weights=None, replace_stride_with_dilation=[False, False, True]), 21, False)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 21, (batch, size, size))
    loss_fn = lambda: torch.nn.functional.cross_entropy(m(x)["out"], y)
    infer = lambda: m(x)["out"].sum()
else:
    import timm
    m = timm.create_model("efficientnet_b0", drop_rate=0.2, drop_path_rate=0.2)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 1000
    loss_fn = lambda: torch.nn.functional.cross_entropy(m(x), y)
    infer = lambda: m(x).sum()
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
ts = []
for i in range(iters + warmup):
    t = time.perf_counter()
    if mode == "infer":
        m.eval()
        with torch.no_grad():
            infer().item()
    else:
        m.train(); opt.zero_grad()
        l = loss_fn(); l.backward(); opt.step(); l.item()
    if i >= warmup:
        ts.append((time.perf_counter() - t) * 1e3)
ts.sort()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"ms": ts[len(ts) // 2], "peak_mb": int(hwm) / 1024}))
'''

# name -> (pupil --set list, classes, mode, batch, size, has torch peer)
WORKLOADS = {
    "retinanet-r50": (["task=detection", "backbone.name=resnet-50"], 80),
    "retinanet-b0": (["task=detection", "backbone.name=efficientnet-b0"], 80),
    "deeplab-r50": (["task=segmentation", "backbone.name=resnet-50", "segmenter.head=deeplab-v3-plus"], 21),
    "nasfpn-seg-b0": (["task=segmentation", "backbone.name=efficientnet-b0", "segmenter.head=nas-fpn"], 21),
    "efficientnet-b0": (["task=classification", "backbone.name=efficientnet-b0"], 1000),
}
CASES = [
    ("retinanet-r50", "infer", 1, 512), ("retinanet-r50", "train", 2, 512),
    ("retinanet-b0", "infer", 1, 512), ("retinanet-b0", "train", 2, 512),
    ("deeplab-r50", "infer", 1, 512), ("deeplab-r50", "train", 2, 512),
    ("nasfpn-seg-b0", "infer", 1, 512), ("nasfpn-seg-b0", "train", 2, 512),
    ("efficientnet-b0", "infer", 1, 224), ("efficientnet-b0", "infer", 8, 224),
    ("efficientnet-b0", "train", 8, 224),
]
NO_PEER = {"nasfpn-seg-b0"}


def run_pupil(exe, name, mode, batch, size, iters, warmup):
    sets, classes = WORKLOADS[name]
    cmd = [exe, "bench", "--mode", mode, "--batch", str(batch), "--size", str(size),
           "--classes", str(classes), "--iters", str(iters), "--warmup", str(warmup)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pupil failed on {name} {mode}: {out.stderr.strip()}")
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["ms"], j["peak_mb"]


def run_torch(py, name, mode, batch, size, iters, warmup):
    out = subprocess.run([py, "-c", TORCH, name, mode, str(batch), str(size), str(iters), str(warmup)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"torch failed on {name} {mode}: {out.stderr.strip()[-2000:]}")
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["ms"], j["peak_mb"]


def run_backbones_bench(exe, name, mode, batch, size, iters, warmup):
    # the purpose-built EfficientNet-B0 bench, to check `pupil bench` takes the same time
    out = subprocess.run([exe, mode, str(batch), str(iters)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"backbones-bench failed on {mode} {batch}: {out.stderr.strip()}")
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["ms"], j["peak_rss_mb"]


def summary(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pupil", default="target/release/pupil")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--backbones-bench", default="target/release/backbones-bench",
                    help="also time EfficientNet-B0 through this binary ('' to skip)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="workload names")
    a = ap.parse_args()
    cases = [c for c in CASES if not a.only or c[0] in a.only]
    rows = []
    for (name, mode, batch, size) in cases:
        res = {"pupil": [], "torch": [], "backbones-bench": []}
        for r in range(a.rounds):
            sides = ["pupil", "torch"] if r % 2 == 0 else ["torch", "pupil"]
            if name == "efficientnet-b0" and a.backbones_bench:
                sides.append("backbones-bench")
            for side in sides:
                if side == "torch" and name in NO_PEER:
                    continue
                f, exe = {"pupil": (run_pupil, a.pupil), "torch": (run_torch, a.python),
                          "backbones-bench": (run_backbones_bench, a.backbones_bench)}[side]
                res[side].append(f(exe, name, mode, batch, size, a.iters, a.warmup))
            print(f"{name} {mode} b{batch} round {r}: " + ", ".join(
                f"{s} {v[-1][0]:.1f} ms" for s, v in res.items() if v), file=sys.stderr, flush=True)
        rows.append((name, mode, batch, size, res))
    print("| workload | mode | batch | px | PyTorch img/s median (spread) | pupil img/s median (spread) "
          "| pupil / PyTorch | peak MB PyTorch | peak MB pupil |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, mode, batch, size, res) in rows:
        def ips(side):
            if not res[side]:
                return None, "-"
            m, lo, hi = summary([batch * 1e3 / ms for ms, _ in res[side]])
            return m, f"{m:.2f} ({lo:.2f}-{hi:.2f})"
        def peak(side):
            return f"{max(p for _, p in res[side]):,.0f}" if res[side] else "-"
        tm, ts = ips("torch")
        pm, ps = ips("pupil")
        ratio = f"{pm / tm:.2f}x" if tm else "-"
        print(f"| {name} | {mode} | {batch} | {size} | {ts} | {ps} | {ratio} | {peak('torch')} | {peak('pupil')} |")
        if res["backbones-bench"]:
            bm, bs = ips("backbones-bench")
            print(f"| {name} via backbones-bench | {mode} | {batch} | {size} | {ts} | {bs} | {bm / tm:.2f}x | {peak('torch')} | {peak('backbones-bench')} |")
    print(json.dumps([{"workload": n, "mode": m, "batch": b, "size": s,
                       "pupil_ms": [x[0] for x in r["pupil"]], "torch_ms": [x[0] for x in r["torch"]],
                       "pupil_peak_mb": [x[1] for x in r["pupil"]], "torch_peak_mb": [x[1] for x in r["torch"]],
                       "backbones_bench_ms": [x[0] for x in r["backbones-bench"]]}
                      for (n, m, b, s, r) in rows]))


if __name__ == "__main__":
    main()
