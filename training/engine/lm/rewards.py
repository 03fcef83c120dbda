"""Scalar rewards of packed pairs: a sequence-classification head read at each response's last token.

The reward model is the transformers ``…ForSequenceClassification`` class of the base architecture with
``num_labels=1`` (``load_reward_model``): its body runs on the packed rows exactly as the DPO recipe runs a
policy (prompt once, chosen and rejected side by side, ``logps.row_hidden``), and its ``score`` head runs only
on the two positions per pair where a response ends, which is where the class's own forward reads the
reward of an unpadded prompt + response.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

from training.engine.lm.collate import PackedBatch
from training.engine.lm.cpu_linear import route_linears
from training.engine.lm.logps import row_hidden
from training.engine.lm.models import ModelSpec, ensure_bundled, existing_folder, hub_call, load_model
from training.engine.runtime.sharding import as_forward


def response_ends(batch: PackedBatch) -> tuple[Tensor, Tensor]:
    """``(rows, positions)``, each ``[2B]``: where the last token of every response sits, ordered chosen of
    pair 0, rejected of pair 0, chosen of pair 1, … (the order of ``batch.segment``)."""
    n = 2 * batch.n_pairs
    segment_row = torch.full((n,), -1, dtype=torch.long, device=batch.segment.device)
    segment_row[batch.segment] = batch.src_row
    pair_row = segment_row[0::2].tolist()
    rows, positions = [0] * n, [0] * n
    for r, spans in enumerate(batch.spans):
        members = [i for i, row in enumerate(pair_row) if row == r]  # a row holds its pairs in batch order
        for i, (start, prompt, chosen, rejected) in zip(members, spans, strict=True):
            rows[2 * i] = rows[2 * i + 1] = r
            positions[2 * i] = start + prompt + chosen - 1
            positions[2 * i + 1] = start + prompt + chosen + rejected - 1
    device = batch.input_ids.device
    return torch.tensor(rows, device=device), torch.tensor(positions, device=device)


def pair_rewards(model: nn.Module, batch: PackedBatch) -> tuple[Tensor, Tensor]:
    """Rewards ``[B]`` of the chosen and ``[B]`` of the rejected responses (float32)."""
    return as_forward(model, _pair_rewards, model, batch)


def _pair_rewards(model: nn.Module, batch: PackedBatch) -> tuple[Tensor, Tensor]:
    body, head = model.base_model, model.score
    hidden, offsets = row_hidden(body, batch)
    rows, positions = response_ends(batch)
    rewards = head(hidden[offsets.to(rows.device)[rows] + positions]).squeeze(-1).float()
    return rewards[0::2], rewards[1::2]


def load_reward_model(
    spec: ModelSpec | str, *, pad_token_id: int, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The sequence-classification model (one label) of a causal-LM spec: a folder's own reward model,
    or its causal LM's body with a new ``score`` head (initialised from the run's seeded RNG)."""
    spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
    kwargs = {"num_labels": 1, "dtype": dtype, "attn_implementation": "sdpa", "pad_token_id": pad_token_id}
    if spec.kind == "tiny":
        causal = load_model(spec, onednn_linears=False)
        config = causal.config
        config.num_labels, config.pad_token_id = 1, pad_token_id
        model = LlamaForSequenceClassification(config).to(dtype)
        model.model.load_state_dict(causal.model.state_dict())
    elif spec.kind == "bundled":
        model = AutoModelForSequenceClassification.from_pretrained(ensure_bundled(spec.ref), **kwargs)
    elif spec.kind == "local":
        model = AutoModelForSequenceClassification.from_pretrained(existing_folder(spec.ref), **kwargs)
    else:
        model = hub_call(
            spec.ref,
            lambda ref, **kw: AutoModelForSequenceClassification.from_pretrained(ref, **kwargs, **kw),
        )
    route_linears(model)
    return model.eval()


def is_reward_model_folder(folder: Path) -> bool:
    """A folder whose config names a sequence-classification architecture with one label."""
    import json

    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text())
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []) and (
        config.get("num_labels", len(config.get("id2label") or {}) or 1) == 1
    )
