"""Regenerates crates/data/tests/data/mask_golden.json with pycocotools (the reference)."""
import json, random, sys
import numpy as np
from pycocotools import mask as M

random.seed(0)
cases = []
for k in range(40):
    h, w = random.randint(5, 60), random.randint(5, 60)
    polys = []
    for _ in range(random.randint(1, 2)):
        n = random.randint(3, 8)
        # some vertices outside the image, some on exact pixel centres
        pts = []
        for _ in range(n):
            x = random.uniform(-5, w + 5) if random.random() < 0.8 else float(random.randint(0, w))
            y = random.uniform(-5, h + 5) if random.random() < 0.8 else float(random.randint(0, h))
            pts += [round(x, 2), round(y, 2)]
        polys.append(pts)
    rles = M.frPyObjects(polys, h, w)
    rle = M.merge(rles)
    mask = M.decode(rle)
    cases.append({
        "height": h, "width": w, "polygons": polys,
        "rle_compressed": rle["counts"].decode(),
        "mask_rows": ["".join(str(int(v)) for v in row) for row in mask],
        "area": int(M.area(rle)),
        "bbox": [float(v) for v in M.toBbox(rle)],
    })
json.dump(cases, open(sys.argv[1], "w"))
