"""Causal language-model sources: a Hugging Face causal-LM directory or a GGUF file.

A GGUF file is what users of llama.cpp arrive with; transformers reads it (`gguf_file=`, with the
`gguf` package) and dequantizes it to float32, and that float model is the *source* every artifact
is judged against (for a Q4_1 GGUF such as SmolLM2's, the dequantized Q4_1 weights, not the
original bf16 ones). Either way the model is written once as a plain Hugging Face directory (config,
safetensors, tokenizer.json) under the conversion's work folder, which the exporters read.

Families taken (tested with tiny configs of each): Llama (SmolLM2, TinyLlama), Mistral, Qwen2, GPT-2.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..errors import SourceError

# model_type -> what users call it; the exporters (optimum, OpenVINO) and transformers' GGUF reader
# all take these.
FAMILIES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "gpt2": "GPT-2"}
# GGUF general.architecture spellings of the same families.
GGUF_ARCHES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gpt2": "gpt2"}


@dataclasses.dataclass
class LMSource:
    spec: str                  # what the user passed
    kind: str                  # "hf-causal-lm" | "gguf"
    hf_dir: Path               # a plain HF directory (for a GGUF: the dequantized copy in the work folder)
    model: Any                 # the transformers model, eval mode, float32
    tokenizer: Any             # a transformers fast tokenizer (its tokenizer.json goes into the bundle)
    sha256: str
    license: str | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def family(self) -> str:
        return self.config.model_type

    def dims(self) -> dict[str, int]:
        """Layers, KV heads, head size and vocabulary: what the KV cache and the harness need."""
        c = self.config
        heads = getattr(c, "num_attention_heads", None) or c.n_head
        hidden = getattr(c, "hidden_size", None) or c.n_embd
        kv = getattr(c, "num_key_value_heads", None) or heads
        return {"layers": int(getattr(c, "num_hidden_layers", None) or c.n_layer), "kv_heads": int(kv),
                "head_dim": int(getattr(c, "head_dim", None) or hidden // heads), "hidden": int(hidden),
                "vocab_size": int(c.vocab_size),
                "max_positions": int(getattr(c, "max_position_embeddings", None) or c.n_positions)}

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "sha256": self.sha256, "family": FAMILIES[self.family],
                "model_type": self.family, "parameters": self.parameters(), **self.dims(),
                "tie_word_embeddings": bool(getattr(self.config, "tie_word_embeddings", False)),
                "eos_token_ids": eos_ids(self), "bos_token_id": self.tokenizer.bos_token_id}


def eos_ids(src: LMSource) -> list[int]:
    ids = {src.tokenizer.eos_token_id}
    gen = getattr(src.model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(int(i) for i in ids if i is not None)


def is_lm_source(spec: str | os.PathLike) -> bool:
    """A .gguf file, or a HF directory whose config names a causal-LM architecture."""
    p = Path(spec)
    if p.suffix.lower() == ".gguf":
        return True
    cfg = p / "config.json"
    if not (p.is_dir() and cfg.is_file()):
        return False
    try:
        archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def gguf_architecture(path: Path) -> tuple[str, str | None]:
    """(general.architecture, general.license) read from the GGUF header, without loading tensors."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise SourceError(f"{path}: reading GGUF needs the gguf package: pip install gguf") from exc
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # a truncated or non-GGUF file: ValueError, struct.error, ...
        raise SourceError(f"{path}: not a readable GGUF file ({_first(exc)})") from exc

    def text(key):
        f = reader.fields.get(key)
        return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    arch = text("general.architecture")
    if arch is None:
        raise SourceError(f"{path}: GGUF header has no general.architecture")
    return arch, text("general.license")


def _first(exc: BaseException) -> str:
    s = str(exc).strip()
    return (s.splitlines()[0] if s else type(exc).__name__)[:200]


def load_lm(spec: str | os.PathLike, work: Path) -> LMSource:
    """Load the source once; a GGUF is dequantized into `work`/source (the HF copy the exporters read)."""
    from ..hashing import sha256_path
    from ..backends.base import quiet
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"{p}: no such file or directory")
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise SourceError(f"{p}: a .gguf source must be a file")
        arch, licence = gguf_architecture(p)
        if arch not in GGUF_ARCHES.values():
            raise SourceError(f"{p}: GGUF architecture {arch!r} is not supported; expected one of "
                              f"{', '.join(sorted(GGUF_ARCHES.values()))}")
        kind, load_from, kw = "gguf", p.parent, {"gguf_file": p.name}
    else:
        _check_hf_dir(p)
        licence, kind, load_from, kw = _card_license(p), "hf-causal-lm", p, {}
    import logging
    # Import-time chatter of optional pieces transformers pulls in (torchao's missing CUDA kernels,
    # torch's pytree deprecations): not the user's problem, not on their terminal.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF reader draws its own tqdm bar on stderr
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise SourceError(f"{p}: loading a causal LM needs transformers: pip install transformers") from exc
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # the GGUF dequantization bar, on stderr
    with quiet("transformers", "accelerate"):
        try:
            tok = AutoTokenizer.from_pretrained(str(load_from), **kw)
        except Exception as exc:
            raise SourceError(f"{p}: the tokenizer could not be loaded ({_first(exc)})") from exc
        if not getattr(tok, "is_fast", False):
            raise SourceError(f"{p}: no fast tokenizer (tokenizer.json); the device runs tokenizer.json with "
                              "the tokenizers package: save one with AutoTokenizer(...).save_pretrained")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(load_from), dtype="float32", **kw).eval()
        except Exception as exc:
            raise SourceError(f"{p}: transformers could not load the model ({_first(exc)})") from exc
    if model.config.model_type not in FAMILIES:
        raise SourceError(f"{p}: model_type {model.config.model_type!r} is not supported; expected one of "
                          f"{', '.join(FAMILIES)}")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    hf_dir = work / "source"
    with quiet("transformers", "accelerate"):
        model.save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
    if not (hf_dir / "tokenizer.json").is_file():
        raise SourceError(f"{p}: the tokenizer has no tokenizer.json form (needed on the device)")
    return LMSource(str(spec), kind, hf_dir, model, tok, sha256_path(p), licence)


def _check_hf_dir(p: Path) -> None:
    if not p.is_dir():
        raise SourceError(f"{p}: expected a Hugging Face causal-LM directory or a .gguf file")
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"{p}: no config.json (not a Hugging Face model directory)") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"{p / 'config.json'}: unreadable ({_first(exc)})") from exc
    if cfg.get("model_type") not in FAMILIES:
        raise SourceError(f"{p / 'config.json'}: model_type {cfg.get('model_type')!r} is not supported for "
                          f"text generation; expected one of {', '.join(FAMILIES)}")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise SourceError(f"{p}: no tokenizer in the directory (tokenizer.json, or tokenizer.model / vocab.json "
                          "to build one); the bundle must carry the model's tokenizer")


def _card_license(p: Path) -> str | None:
    """`license:` from the model card's YAML header (README.md), as the Hub shows it."""
    card = p / "README.md"
    if not card.is_file():
        return None
    lines = card.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip().strip("'\"") or None
    return None
