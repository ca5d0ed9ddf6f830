"""The source's own figures, computed once on the dev machine with PyTorch: what every artifact and
every device is compared with (they travel in the bundle as lm_validation.npz and prompts.json)."""

from __future__ import annotations

import numpy as np

TOP_K = 32  # source log-probabilities kept per position for the KL estimate (harness/_ek_generate.py)


def source_reference(model, windows: np.ndarray, top_k: int = TOP_K) -> dict[str, np.ndarray]:
    """Per window [L tokens]: the source's NLL of each next token [L-1] and its top-K ids/log-probs."""
    import torch
    nll, idx, logp = [], [], []
    with torch.inference_mode():
        for w in windows:
            x = torch.from_numpy(np.asarray(w, np.int64))[None]
            lp = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0, :-1].double(), dim=-1)
            nll.append((-lp.gather(1, x[0, 1:, None])[:, 0]).float().numpy())
            v, i = lp.topk(top_k, dim=-1)
            idx.append(i.int().numpy())
            logp.append(v.float().numpy())
    return {"windows": np.asarray(windows, np.int64), "nll": np.stack(nll), "top_idx": np.stack(idx),
            "top_logp": np.stack(logp)}


def source_greedy(model, ids: list[int], n: int) -> list[int]:
    """The source's greedy continuation (n tokens, EOS not special), as the harness generates."""
    import torch
    out, past, x = [], None, torch.tensor([ids], dtype=torch.int64)
    with torch.inference_mode():
        for _ in range(n):
            r = model(input_ids=x, past_key_values=past, use_cache=True)
            past = r.past_key_values
            tok = int(r.logits[0, -1].argmax())
            out.append(tok)
            x = torch.tensor([[tok]], dtype=torch.int64)
    return out
