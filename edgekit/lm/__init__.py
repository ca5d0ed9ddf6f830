"""Generative language models: sources, export with KV cache, int4, the memory budget, conversion."""
