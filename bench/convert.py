"""Time the dataset tools on synthetic data: synth, labelme -> COCO conversion, validation.

    python bench/convert.py [--images 1000] [--size 128] [--keep DIR]

Target (issue 4): converting 1,000 synthetic labelme files takes well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from workbench.data.labelme import convert_labelme
from workbench.data.synthetic import SynthConfig, synthesize, synthetic_schema
from workbench.data.validate import validate_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write into this folder instead of a temporary one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        t0 = time.perf_counter()
        synthesize(folder, args.images, seed=args.seed, cfg=SynthConfig(image_size=args.size))
        t1 = time.perf_counter()
        coco = convert_labelme(folder, synthetic_schema(), out=folder / "coco.json")
        t2 = time.perf_counter()
        report = validate_coco(folder / "coco.json", images=folder)
        t3 = time.perf_counter()

    n, m = len(coco["images"]), len(coco["annotations"])
    print(f"\n{n} images {args.size}x{args.size}, {m} instances; {os.cpu_count()} CPU cores visible")
    print(f"synth     {t1 - t0:7.2f} s  ({n / (t1 - t0):7.0f} images/s)")
    print(f"convert   {t2 - t1:7.2f} s  ({n / (t2 - t1):7.0f} files/s)   <- target: well under 60 s for 1,000")
    print(f"validate  {t3 - t2:7.2f} s  ({n / (t3 - t2):7.0f} images/s, image files decoded)  ok={report.ok}")


if __name__ == "__main__":
    main()
