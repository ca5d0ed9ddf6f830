"""Shared by the backend tests: real digits and a tiny CNN trained on them in a second."""

from __future__ import annotations

import numpy as np
import torch

from edgekit.data import Dataset

N_EVAL = 64


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8
    return x, d.target.astype(np.int64)


def tiny_cnn(x, y):
    """Conv(1,8,3,pad 1) -> ReLU -> Flatten -> Linear(512,10), trained briefly on real digits so
    that argmax means something (top-1 about 0.95)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: extra threads only spin, badly so on a busy machine
    try:
        for _ in range(120):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def dataset(inputs: dict, labels=None) -> Dataset:
    return Dataset(inputs=inputs, labels=labels, path="mem", sha256="0", format="npz")
