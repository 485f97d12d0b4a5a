"""EfficientNet-B0 on CPU, pupil vs PyTorch (timm) in one run: inference and one training step
(forward in train mode, backward, SGD update) at 224 px, batch 1 and 8, 2 threads; each
configuration in its own process so peak memory (VmHWM) is its own.

    cargo build --release -p pupil-backbones --bin backbones-bench
    /work/venv/bin/python bench/backbones.py
"""
import json, subprocess, sys, os

TORCH = r'''
import sys, time, json, torch, timm
torch.set_num_threads(2)
mode, batch, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# pupil's b0 trains with dropout 0.2 and stochastic depth 0.2 (the EfficientNet recipe);
# timm's defaults are 0 for both, so they are set here to do the same work.
m = timm.create_model("efficientnet_b0", pretrained=False, drop_rate=0.2, drop_path_rate=0.2)
x = torch.randn(batch, 3, 224, 224)
y = torch.arange(batch) % 1000
opt = torch.optim.SGD(m.parameters(), lr=0.01)
ts = []
for i in range(iters + 2):
    t = time.perf_counter()
    if mode == "infer":
        m.eval()
        with torch.no_grad():
            m(x).sum().item()
    else:
        m.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    if i >= 2:
        ts.append((time.perf_counter() - t) * 1e3)
ts.sort()
med = ts[len(ts) // 2]
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"impl": "torch", "mode": mode, "batch": batch, "ms": round(med, 2), "img_per_s": round(batch * 1e3 / med, 2), "peak_rss_mb": round(int(peak) / 1024, 1)}))
'''

def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "backbones-bench")
env = dict(os.environ, RAYON_NUM_THREADS="2")
# The VM is shared and timings drift by up to 2x between minutes: each configuration runs
# ROUNDS times, alternating pupil and torch, and the best median of each is kept.
rounds = int(os.environ.get("ROUNDS", "3"))
best = lambda a, b: a if a is None or a["ms"] <= b["ms"] else b
rows = []
for mode in ["infer", "train"]:
    for batch in [1, 8]:
        iters = 10 if batch == 1 else 5
        p = t = None
        for _ in range(rounds):
            rp = run([binary, mode, str(batch), str(iters)], env)
            rt = run([sys.executable, "-c", TORCH, mode, str(batch), str(iters)])
            p = rp if p is None else best(p, rp)
            t = rt if t is None else best(t, rt)
        rows.append((mode, batch, p, t))
print("| mode | batch | pupil ms | torch ms | pupil/torch time | pupil peak MB | torch peak MB |")
print("|---|---|---:|---:|---:|---:|---:|")
for mode, batch, p, t in rows:
    print(f"| {mode} | {batch} | {p['ms']:.1f} | {t['ms']:.1f} | {p['ms'] / t['ms']:.2f}x | {p['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} |")
