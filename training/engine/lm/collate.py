"""Pack preference pairs without padding waste: prompt + chosen + rejected in one row, several pairs a row.

Inside a pair the chosen tokens see the prompt and earlier chosen tokens; the rejected tokens see the prompt
and earlier rejected tokens but never the chosen; pairs never see each other.  Position ids restart for
each pair, and the rejected tokens continue from the prompt's end as if the chosen were not there, so every
token gets the same context and position as in an unpacked forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from training.engine.lm.data import TokenizedPair

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


@dataclass(frozen=True)
class PackedBatch:
    """B pairs packed into R rows of T tokens; N response tokens carry a log-prob.

    input_ids, position_ids: ``[R, T]``; attention_mask: ``[R, 1, T, T]`` bool (True = may attend);
    src_row, src_pos: ``[N]`` where the hidden state predicting each response token sits;
    targets, weights, segment: ``[N]`` — the token id, its weight, and ``2·pair + (0 chosen | 1 rejected)``;
    pair_index: ``[B]`` the dataset index of each pair (for cached reference log-probs);
    consistency: ``[B]`` float, each pair's CREAM consistency C (1.0 for a row without one);
    spans: per row, ``(start, prompt, chosen, rejected)`` token counts of each pair, in row order.
    """

    input_ids: Tensor
    position_ids: Tensor
    attention_mask: Tensor
    src_row: Tensor
    src_pos: Tensor
    targets: Tensor
    weights: Tensor
    segment: Tensor
    pair_index: Tensor
    consistency: Tensor | None = None
    spans: tuple[tuple[tuple[int, int, int, int], ...], ...] = ()

    def to(self, device: torch.device) -> PackedBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)

    @property
    def n_pairs(self) -> int:
        return int(self.pair_index.numel())

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens in the rows."""
        return int((self.position_ids >= 0).sum())


def pair_length(pair: TokenizedPair) -> int:
    return len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def plan_rows(pairs: Sequence[TokenizedPair], token_budget: int | None) -> list[list[int]]:
    """First-fit assignment of pairs (in order) to rows of at most ``token_budget`` tokens (None = one row);
    a pair longer than the budget gets a row of its own."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i, pair in enumerate(pairs):
        n = pair_length(pair)
        slot = next((r for r, u in enumerate(used) if token_budget is None or u + n <= token_budget), None)
        if slot is None:
            rows.append([i])
            used.append(n)
        else:
            rows[slot].append(i)
            used[slot] += n
    return rows


def _row_layout(pairs: Sequence[TokenizedPair], members: list[int], segments: list):
    """Token ids, positions, pair ids and parts of one row; appends response-token records to segments."""
    ids, pos, owner, part = [], [], [], []
    for i in members:
        pair = pairs[i]
        p = len(pair.prompt_ids)
        start = len(ids)
        ids += pair.prompt_ids
        pos += range(p)
        owner += [i] * p
        part += [PROMPT] * p
        for kind, toks, wts in (
            (CHOSEN, pair.chosen_ids, pair.chosen_weights),
            (REJECTED, pair.rejected_ids, pair.rejected_weights),
        ):
            here = len(ids)
            for j, (tok, w) in enumerate(zip(toks, wts, strict=True)):
                src = start + p - 1 if j == 0 else here + j - 1
                segments.append((src, tok, w, 2 * i + (kind - 1)))
            ids += toks
            pos += range(p, p + len(toks))
            owner += [i] * len(toks)
            part += [kind] * len(toks)
    return ids, pos, owner, part


def _row_spans(pairs: Sequence[TokenizedPair], members: list[int]) -> tuple[tuple[int, int, int, int], ...]:
    spans, start = [], 0
    for i in members:
        pair = pairs[i]
        spans.append((start, len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)))
        start += pair_length(pair)
    return tuple(spans)


def _row_mask(owner: Tensor, part: Tensor) -> Tensor:
    n = owner.numel()
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    same_pair = owner[:, None] == owner[None, :]
    visible = (part[None, :] == PROMPT) | (part[:, None] == part[None, :])
    mask = causal & same_pair & visible & (part[:, None] != PAD)
    return mask | torch.eye(n, dtype=torch.bool)  # padding attends to itself only (no all-masked rows)


@dataclass(frozen=True)
class PackingCollator:
    """``list[TokenizedPair]`` (B pairs) → ``PackedBatch`` on ``device``; ``token_budget`` caps a row's
    length."""

    pad_token_id: int
    token_budget: int | None = None
    device: torch.device = torch.device("cpu")

    def __call__(self, pairs: Sequence[TokenizedPair]) -> PackedBatch:
        rows = plan_rows(pairs, self.token_budget)
        width = max(sum(pair_length(pairs[i]) for i in members) for members in rows)
        n_rows = len(rows)
        input_ids = torch.full((n_rows, width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.full((n_rows, width), -1, dtype=torch.long)
        mask = torch.zeros(n_rows, 1, width, width, dtype=torch.bool)
        src_row, src_pos, targets, weights, segment = [], [], [], [], []
        spans = []
        for r, members in enumerate(rows):
            spans.append(_row_spans(pairs, members))
            records: list = []
            ids, pos, owner, part = _row_layout(pairs, members, records)
            n = len(ids)
            input_ids[r, :n] = torch.tensor(ids)
            position_ids[r, :n] = torch.tensor(pos)
            owner_t = torch.full((width,), -1, dtype=torch.long)
            owner_t[:n] = torch.tensor(owner)
            part_t = torch.full((width,), PAD, dtype=torch.long)
            part_t[:n] = torch.tensor(part)
            mask[r, 0] = _row_mask(owner_t, part_t)
            for src, tok, w, seg in records:
                src_row.append(r)
                src_pos.append(src)
                targets.append(tok)
                weights.append(w)
                segment.append(seg)
        order = sorted(range(len(segment)), key=lambda k: segment[k])  # group tokens by segment, stable

        def pick(values, dtype):
            return torch.tensor([values[k] for k in order], dtype=dtype)

        return PackedBatch(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=mask,
            src_row=pick(src_row, torch.long),
            src_pos=pick(src_pos, torch.long),
            targets=pick(targets, torch.long),
            weights=pick(weights, torch.float32),
            segment=pick(segment, torch.long),
            pair_index=torch.tensor([p.index for p in pairs], dtype=torch.long),
            consistency=torch.tensor([p.consistency for p in pairs], dtype=torch.float32),
            spans=tuple(spans),
        ).to(self.device)
