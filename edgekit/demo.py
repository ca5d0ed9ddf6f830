"""`edgekit demo`: the whole flow on a real (tiny) model, in about a minute.

Trains a small CNN on scikit-learn's digits (1,797 real 8x8 images), deterministically, saves it
as a torch.export program (.pt2) with calibration and validation sets (.npz), converts it for the
two x86 profiles in fp32 and int8, benchmarks every bundle in fresh processes, gates each report
and prints one comparison table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import MissingExtraError

SEED = 0


def digits_cnn(width: int = 16):
    """Conv-Conv-Pool-MLP for 1x8x8 digits; `width` is the first conv's channels."""
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, 10))

        def forward(self, x):
            return self.head(self.features(x))
    return DigitsCNN()


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): images scaled to [0, 1], shape N x 1 x 8 x 8; a fixed,
    stratified 80/20 split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingExtraError("scikit-learn", "all", "the digits demo") from exc
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    return xt, yt, xv, yv


def train_digits(epochs: int = 30, width: int = 16):
    """Deterministic training (fixed seed, one thread, deterministic kernels): a few seconds."""
    import torch
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt, yt, xv, yv = digits_data()
        model = digits_cnn(width)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        x, y = torch.from_numpy(xt), torch.from_numpy(yt)
        gen = torch.Generator().manual_seed(SEED)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x), generator=gen).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        with torch.inference_mode():
            acc = float((model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return model, acc


def write_example(work: Path) -> dict[str, Path]:
    """Train, then write model.pt2, calibration.npz (128 training images) and validation.npz."""
    import torch
    work.mkdir(parents=True, exist_ok=True)
    model, acc = train_digits()
    xt, yt, xv, yv = digits_data()
    ep = torch.export.export(model, (torch.from_numpy(xt[:2]),),  # batch 2: a batch of 1 would be specialised to a constant
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    paths = {"model": work / "digits_cnn.pt2", "calibration": work / "calibration.npz",
             "validation": work / "validation.npz"}
    torch.export.save(ep, str(paths["model"]))
    np.savez(paths["calibration"], x=xt[:128], labels=yt[:128])
    np.savez(paths["validation"], x=xv, labels=yv)
    return {**paths, "accuracy": acc}


def run_demo(out: Path, quick: bool = True) -> int:
    from rich.table import Table

    from .bench import bench, summary_row
    from .convert import convert
    from .gate import gate
    from .progress import console as make_console, steps

    console = make_console()
    console.print("[bold]edgekit demo[/]: digits CNN -> x86-avx2, x86-vnni x {fp32, int8} -> bench -> gate")
    ex = write_example(out / "example")
    console.print(f"trained digits CNN: validation accuracy {ex['accuracy']:.4f} ({ex['model']})")
    results = convert(str(ex["model"]), ["x86-avx2", "x86-vnni"], str(ex["calibration"]),
                      str(ex["validation"]), out / "bundles", precisions=["fp32", "int8"],
                      license="MIT", provenance="edgekit demo: CNN trained on scikit-learn digits (BSD-3-Clause)")
    # Quick settings keep the demo near a minute; `--full` uses the harness's defaults
    # (HARNESS_SPEC: >= 300 runs and >= 10 s per trial).
    settings = dict(runs=300, warmup=10, min_seconds=1.0, warmup_seconds=0.2, trials=3) if quick else {}
    reports = []
    with steps(len(results), "benchmarking") as advance:
        for r in results:
            advance(r.name)
            reports.append(out / "reports" / f"{r.name}.json")
            bench(r.path, reports[-1], **settings)
    verdict = gate(reports)
    by_bundle: dict[str, list] = {}
    for c in verdict.checks:
        by_bundle.setdefault(c.bundle, []).append(c)
    t = Table(title="edgekit demo: digits CNN on this machine" + (" (quick measurement)" if quick else ""))
    for col in ("bundle", "precision", "accuracy", "drop", "p50 ms", "p95 ms", "peak MB", "size MB", "verdict"):
        t.add_column(col, justify="right" if col not in ("bundle", "verdict") else "left")
    from .report.load import load_report
    for path in reports:
        row = summary_row(load_report(path))
        checks = by_bundle.get(row["bundle"], [])
        failed = [c.budget for c in checks if c.status == "fail"]
        warned = [c.budget for c in checks if c.status == "warn"]
        v = ("[red]FAIL[/] " + ", ".join(failed)) if failed else "[green]pass[/]"
        if warned:
            v += " [yellow](warn: " + ", ".join(warned) + ")[/]"
        t.add_row(row["bundle"], row["precision"], f"{row['accuracy']:.4f}", f"{row['drop']:+.4f}",
                  f"{row['p50_ms']:.3f}", f"{row['p95_ms']:.3f}", f"{row['peak_mb']:.1f}",
                  f"{row['size_mb']:.4f}", v)
    console.print(t)
    from .gate import render_table
    console.print(render_table(verdict))
    console.print(f"bundles: {out / 'bundles'}", soft_wrap=True)
    console.print(f"reports: {out / 'reports'}", soft_wrap=True)
    console.print(f"verdict: {verdict.verdict}")
    return 0
