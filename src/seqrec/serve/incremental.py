"""Incremental encoding: the recurrent models carry a state that one more item updates, so a live
user's query after a click costs one RNN step instead of a pass over the whole history.

Works for the models that read their history with a recurrent net from left to right (``lstm``,
``gru4rec``), through their public submodules, in eval mode (dropout off), so stepping item by item
equals a full re-encode (tested at every prefix up to ``max_len``).

What is not incremental, and why:

* A history longer than the model's ``max_len``: the evaluator reads only its last ``max_len``
  items, so every new item also drops the oldest one, which a recurrent state cannot forget. The
  cache is used only while a history fits in ``max_len``; past it, each request re-encodes the last
  ``max_len`` items, exactly as the evaluator does.
* SASRec: positions are counted from the end of the history, so appending an item shifts the
  position of every earlier one, and every state changes. It is re-encoded per request (one pass
  over at most ``max_len`` items, about a millisecond on one CPU core).
* Popularity models ignore the history's content (their query is a constant).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqrec.models.base import SequenceModel, gather_time, left_to_right

State = tuple[Tensor, ...]
"""A recurrent state, ``[layers, B, H]`` tensors: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU."""


class RNNStepper:
    """Full encodes that also return the recurrent state, and steps from a state."""

    def __init__(self, embed: nn.Module, rnn: nn.LSTM | nn.GRU, head: nn.Module | None) -> None:
        self.embed = embed
        self.rnn = rnn
        self.head = head

    @classmethod
    def for_model(cls, model: SequenceModel) -> RNNStepper | None:
        """A stepper for ``model`` (in eval mode), or None when it cannot be encoded incrementally."""
        from seqrec.models.gru4rec import GRU4Rec
        from seqrec.models.lstm import LSTMRec

        if model.training:
            raise ValueError("incremental encoding needs the model in eval mode (dropout off)")
        embed = _input_encoder(model)
        if embed is None:
            return None
        if type(model) is LSTMRec:
            # the LSTM's state is its query, unless content fusion projects it to item space
            fusion = getattr(getattr(model.config, "fusion", None), "mode", "id")
            head = getattr(model, "out_proj", None) if fusion != "id" else None
            return cls(embed, model.lstm, head)
        if type(model) is GRU4Rec:
            return cls(embed, model.gru, model.proj)
        return None

    def _query(self, top: Tensor) -> Tensor:
        return top if self.head is None else self.head(top)  # [B, D]

    def _pack(self, state: State) -> Tensor | tuple[Tensor, Tensor]:
        return state if isinstance(self.rnn, nn.LSTM) else state[0]  # type: ignore[return-value]

    def _unpack(self, state: Tensor | tuple[Tensor, Tensor]) -> State:
        return tuple(state) if isinstance(state, tuple) else (state,)

    @torch.inference_mode()
    def encode(self, seq: Tensor) -> tuple[Tensor, State]:
        """``seq [B, L]`` left-padded, every row with at least one item -> ``(query [B, D], state)``.

        The recurrence reads the packed real items only, as the model's own ``encode`` does.
        """
        idx, lengths = left_to_right(seq)
        if bool((lengths == 0).any()):
            raise ValueError("every history must hold at least one item")
        x = gather_time(self.embed(seq), idx)  # [B, L, E] right-padded
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)  # final states, in the batch's own order
        state = self._unpack(state)
        return self._query(state[0][-1]), state  # top layer's last output = its final h

    @torch.inference_mode()
    def step(self, state: State, items: Tensor) -> tuple[Tensor, State]:
        """Continue ``state`` (``[layers, B, H]``) with ``items [B, m]`` (no padding)."""
        out, new = self.rnn(self.embed(items), self._pack(state))  # out: [B, m, H]
        return self._query(out[:, -1]), self._unpack(new)


def _input_encoder(model: SequenceModel) -> nn.Module | None:
    """The module turning item indices ``[B, L]`` into input vectors ``[B, L, E]``: the model's
    item encoder (``items``, ids and/or content) or, in older models, its ``embed`` table."""
    for name in ("items", "embed"):
        m = getattr(model, name, None)
        if isinstance(m, nn.Module):
            return m
    return None


@dataclass
class _Entry:
    items: np.ndarray
    """The item indices this state has read (the whole history, <= max_len)."""
    state: State
    query: Tensor


class StateCache:
    """Recurrent states of recently active users, least recently used evicted first.

    An entry is used only if its items are a prefix of the user's current history, so a history
    changed behind the cache's back (a user forgotten on another replica) is re-encoded, not
    continued. Not thread-safe: the event loop, which runs every batch, owns it.
    """

    def __init__(self, stepper: RNNStepper, max_len: int, max_users: int = 20_000) -> None:
        self.stepper = stepper
        self.max_len = max_len
        self.max_users = max_users
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def usable(self, history: np.ndarray) -> bool:
        """Whether ``history`` can go through the cache (1 to ``max_len`` items)."""
        return 0 < len(history) <= self.max_len

    def queries(self, keys: list[str], histories: list[np.ndarray]) -> list[Tensor]:
        """``[D]`` query per (user key, usable history): stepped from cached states where the
        cache holds a prefix, encoded in one batch otherwise; the cache is updated."""
        out: list[Tensor | None] = [None] * len(keys)
        steps: dict[int, list[int]] = {}  # new items -> rows that continue a cached state
        full: list[int] = []
        for j, (key, h) in enumerate(zip(keys, histories)):
            e = self._entries.get(key)
            n = 0 if e is None else len(e.items)
            if e is not None and n <= len(h) and np.array_equal(e.items, h[:n]):
                self.hits += 1
                if n == len(h):
                    out[j] = e.query
                    self._entries.move_to_end(key)
                else:
                    steps.setdefault(len(h) - n, []).append(j)
            else:
                self.misses += 1
                full.append(j)
        for m, rows in steps.items():  # one batched step per number of new items
            state = tuple(torch.cat(parts, 1) for parts in zip(*(self._entries[keys[j]].state
                                                                   for j in rows)))
            new = torch.from_numpy(np.stack([histories[j][-m:] for j in rows]))  # [R, m]
            q, st = self.stepper.step(state, new)
            for r, j in enumerate(rows):
                out[j] = q[r]
                self._put(keys[j], histories[j], tuple(s[:, r : r + 1] for s in st), q[r])
        if full:
            width = max(len(histories[j]) for j in full)
            seq = torch.zeros(len(full), width, dtype=torch.long)  # [F, L] left-padded
            for r, j in enumerate(full):
                h = histories[j]
                seq[r, width - len(h):] = torch.from_numpy(h)
            q, st = self.stepper.encode(seq)
            for r, j in enumerate(full):
                out[j] = q[r]
                self._put(keys[j], histories[j], tuple(s[:, r : r + 1] for s in st), q[r])
        return out  # type: ignore[return-value]

    def _put(self, key: str, items: np.ndarray, state: State, query: Tensor) -> None:
        self._entries[key] = _Entry(items.copy(), tuple(s.clone() for s in state), query.clone())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_users:
            self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)
