"""Real images for the headless-ResNet example: scikit-learn's digits (1,797 8x8 scans, BSD-3-Clause),
upscaled to 3 x 64 x 64 (nearest neighbour, grey replicated to RGB) and ImageNet-normalised, as
the issue allows for tests and examples. Writes calibration.npz (64 images) and validation.npz
(200 images with their digit labels, for k-NN top-1).

    .venv/bin/python examples/embeddings/make_image_data.py --out build/digits64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]   # torchvision's ImageNet statistics
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def upscale(x: np.ndarray, size: int = 64) -> np.ndarray:
    """N x 1 x 8 x 8 in [0, 1] -> N x 3 x size x size, ImageNet-normalised float32."""
    rep = size // x.shape[-1]
    big = np.repeat(np.repeat(x, rep, axis=2), rep, axis=3)
    return ((np.repeat(big, 3, axis=1) - MEAN) / STD).astype(np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    from edgekit.demo import digits_data
    xt, _, xv, yv = digits_data()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "calibration.npz", x=upscale(xt[:64], args.size))
    np.savez(out / "validation.npz", x=upscale(xv[:200], args.size), labels=yv[:200])
    print(f"{out}/calibration.npz (64), {out}/validation.npz (200, labelled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
