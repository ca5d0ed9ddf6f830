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


def digits_setup() -> dict:
    """The tiny CNN trained on the first 1200 digits, as a source handle, with 64 calibration
    samples, N_EVAL held-out samples and PyTorch's logits on them: what every backend test starts from."""
    from edgekit.source import ModelHandle, TensorSpec
    x, y = digits()
    model = tiny_cnn(x[:1200], y[:1200])
    handle = ModelHandle(kind="python", spec="test", sha256="0",
                         inputs=[TensorSpec("x", (None, 1, 8, 8), "float32")], outputs=["logits"], module=model)
    calib = dataset({"x": x[:64]}, y[:64])
    evals = dataset({"x": x[1200:1200 + N_EVAL]}, y[1200:1200 + N_EVAL])
    with torch.no_grad():
        ref = model(torch.from_numpy(evals.inputs["x"])).numpy()
    return {"x": x, "y": y, "model": model, "handle": handle, "calib": calib, "evals": evals, "ref": ref}


def first_output(runner, data: Dataset) -> np.ndarray:
    """The model's first output on every sample, through the pipeline's own batch-1 runner."""
    from edgekit.parity import run_all
    return run_all(runner, data)[0]
