"""Causal-LM specifics: loading, tokenisation and packing, log-probs, pair attention, the oneDNN linear
route, the reference log-prob cache, LoRA and generation."""
