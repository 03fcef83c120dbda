"""Per-token log-probs of responses under a model, computed only where a log-prob is needed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from training.engine.lm.collate import PackedBatch
from training.engine.lm.data import TokenizedPair
from training.engine.lm.pair_attention import pair_attention, uses_pair_attention
from training.engine.runtime.distributed import DistributedError
from training.engine.runtime.sharding import as_forward


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer body and the LM head of a causal LM (a peft wrapper is looked through)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


def decoder_layers(body: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformer body (Llama, Qwen, Mistral, ...): FSDP's wrap units."""
    layers = getattr(body, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise DistributedError(f"{type(body).__name__} has no decoder layers FSDP knows how to shard")
    return list(layers)


def row_hidden(body: nn.Module, batch: PackedBatch) -> tuple[Tensor, Tensor]:
    """Hidden states of every row's real tokens, rows run one by one (no padding), flattened to
    ``[tokens, H]``, and the flat offset of each row.  Attention runs pair by pair where the model allows
    it (``pair_attention``); otherwise through the row's 4-D mask."""
    lengths = (batch.position_ids >= 0).sum(dim=1).tolist()
    states = []
    for r, n in enumerate(lengths):
        inputs = {
            "input_ids": batch.input_ids[r : r + 1, :n],
            "position_ids": batch.position_ids[r : r + 1, :n],
        }
        if batch.spans and uses_pair_attention(body, n):
            with pair_attention(body):
                out = body(**inputs, pair_spans=batch.spans[r], use_cache=False)
        else:
            out = body(**inputs, attention_mask=batch.attention_mask[r : r + 1, :, :n, :n], use_cache=False)
        states.append(out.last_hidden_state[0])
    offsets = torch.tensor([0, *lengths[:-1]]).cumsum(0)
    return torch.cat(states), offsets


class TargetLogProbs(torch.autograd.Function):
    """``log_softmax(logits)[i, targets[i]]`` for every row i, as ``cross_entropy`` gives it negated, with a
    backward that writes ``onehot − softmax`` into the saved log-softmax in place.  cross_entropy's backward
    allocates a zero ``[N, vocab]`` tensor, scatters into it, and allocates a third for the result; at
    ~1,000 tokens × 49k vocab each is 200 MB of fresh memory and a full pass over it, every step."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, targets)
        ctx.spent = False
        return logp.gather(1, targets[:, None]).squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.spent:
            raise RuntimeError("TargetLogProbs: the saved log-softmax was used up by an earlier backward")
        ctx.spent = True
        logp, targets = ctx.saved_tensors
        grad_logits = logp.exp_().mul_(-grad[:, None])
        return grad_logits.scatter_add_(1, targets[:, None], grad[:, None]), None


def token_logps(model: nn.Module, batch: PackedBatch) -> Tensor:
    """``[N]`` log-probs of the batch's response tokens; the LM head runs only on the N source positions."""
    return as_forward(model, _token_logps, model, batch)


def _token_logps(model: nn.Module, batch: PackedBatch) -> Tensor:
    body, head = decoder_and_head(model)
    hidden, offsets = row_hidden(body, batch)
    logits = head(hidden[offsets[batch.src_row] + batch.src_pos])
    return TargetLogProbs.apply(logits.float(), batch.targets)


def segment_sums(values: Tensor, batch: PackedBatch) -> tuple[Tensor, Tensor]:
    """Weighted sums of per-token values for chosen ``[B]`` and rejected ``[B]``."""
    sums = torch.zeros(2 * batch.n_pairs, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, batch.segment, values * batch.weights.to(values.dtype))
    return sums[0::2], sums[1::2]


def segment_lengths(batch: PackedBatch) -> tuple[Tensor, Tensor]:
    """Weighted response lengths (number of counted tokens) for chosen ``[B]`` and rejected ``[B]``."""
    lens = torch.zeros(2 * batch.n_pairs, device=batch.weights.device).index_add(
        0, batch.segment, batch.weights
    )
    return lens[0::2], lens[1::2]


def split_by_segment(values: Tensor, batch: PackedBatch) -> list[Tensor]:
    """Per-token values cut into ``2B`` tensors: chosen of pair 0, rejected of pair 0, chosen of pair 1…"""
    counts = torch.bincount(batch.segment, minlength=2 * batch.n_pairs).tolist()
    return list(torch.split(values, counts))


@torch.no_grad()
def unpacked_logps(model: nn.Module, pairs: Sequence[TokenizedPair]) -> list[tuple[Tensor, Tensor]]:
    """Per-token log-probs of chosen and rejected from plain full-logit forwards of prompt+response, one
    sequence at a time (the reference implementation the packed path is checked against)."""
    out = []
    for pair in pairs:
        sides = []
        for response in (pair.chosen_ids, pair.rejected_ids):
            ids = torch.tensor([list(pair.prompt_ids) + list(response)])
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
            p = len(pair.prompt_ids)
            logp = torch.log_softmax(logits[p - 1 : -1], dim=-1)
            sides.append(logp.gather(-1, ids[0, p:, None]).squeeze(-1))
        out.append((sides[0], sides[1]))
    return out


def implicit_token_rewards(
    policy_logps: Tensor, reference_logps: Tensor, *, beta: float, clip: float | None = None
) -> Tensor:
    """The DPO implicit reward token by token, β·(log π − log π_ref), with the log-ratio clipped to
    ±``clip`` when set (RTO's dense reward; the evaluation page's heatmap)."""
    ratio = policy_logps - reference_logps
    if clip is not None:
        ratio = ratio.clamp(-clip, clip)
    return beta * ratio


@torch.no_grad()
def token_rewards(
    policy: nn.Module,
    reference: nn.Module | None,
    pair: TokenizedPair,
    collator,
    *,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Per-token implicit rewards β·(log π_θ − log π_ref) of the chosen and rejected tokens (heatmap).
    ``reference=None`` with a LoRA policy means the base model (adapters disabled)."""
    batch = collator([pair])
    pol = split_by_segment(token_logps(policy, batch), batch)
    if reference is None:
        with policy.disable_adapter():
            ref = split_by_segment(token_logps(policy, batch), batch)
    else:
        ref = split_by_segment(token_logps(reference, batch), batch)
    return (
        implicit_token_rewards(pol[0], ref[0], beta=beta),
        implicit_token_rewards(pol[1], ref[1], beta=beta),
    )
