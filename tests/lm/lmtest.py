"""Tiny causal LMs of each family, built in the test (random weights, a byte-level BPE tokenizer
trained on the bundled Debian descriptions), and tiny generative profiles: the real pipeline, runtimes
and harness, on models that convert in seconds."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEXT = REPO / "examples" / "text"
CALIB = TEXT / "debian_sections_calib.jsonl"
VAL = TEXT / "debian_sections_val.jsonl"
# Harness settings for a run in seconds: one trial, two generations.
FAST = ["--trials", "1", "--runs", "2", "--warmup", "0"]


def tokenizer(out: Path, vocab: int = 400):
    """A byte-level BPE fast tokenizer (BOS added, as Llama's) trained on the calibration text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    texts = [json.loads(line)["text"] for line in CALIB.read_text(encoding="utf-8").splitlines() if line.strip()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    return fast


def tiny_lm(out: Path, family: str = "llama", seed: int = 0) -> Path:
    """A randomly initialised causal LM of `family` (llama, qwen2, mistral, gpt2) with the tokenizer above."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, \
        MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM
    tok = tokenizer(out)
    v = len(tok)
    common = dict(vocab_size=v, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    if family == "gpt2":
        cfg, cls = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common), GPT2LMHeadModel
    else:
        cfg_cls, cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                        "mistral": (MistralConfig, MistralForCausalLM)}[family]
        cfg = cfg_cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, **common)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    model.save_pretrained(out)
    return out


def profile(path: Path, name: str = "tiny-gen", runtime: str = "onnxruntime", budget: str = "",
            generation: str = "") -> Path:
    """A small generative profile: 32-token prompts, 8 new tokens, a 256-token context."""
    isa = '["avx2"]'
    path.write_text(f'''name = "{name}"
description = "tiny generative test profile"
arch = "x86_64"
isa = {isa}
runtime = "{runtime}"
device = "CPU"
precision = "int8"
threads = 1
[generation]
prompt_length = 32
new_tokens = 8
block_size = 16
{generation}
[generation.budget]
context_length = 256
peak_memory_mb = 2048
{budget}
''', encoding="utf-8")
    return path
