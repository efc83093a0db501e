"""The LSTM model of the original design: item embedding -> two stacked LSTM layers -> softmax
over all items (a separate output layer, not tied to the input embedding)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqrec.models.base import Dropout, ModelConfig, SequenceModel, gather_time, left_to_right, right_to_left


@dataclass
class LSTMConfig(ModelConfig):
    embed_dim: int = 64
    """Item embedding size."""
    hidden_dim: int = 128
    """LSTM state size (also the size of the output layer's item vectors)."""
    num_layers: int = 2
    """Stacked LSTM layers."""
    dropout: float = 0.2
    """Dropout on the embeddings, between layers and before the output layer."""


def run_rnn(rnn: nn.RNNBase, x: Tensor, seq: Tensor) -> Tensor:
    """Run a batch-first RNN over left-padded ``x [B, L, E]`` reading only the real items.

    Padding never enters the recurrence (packed sequences), so a history gives the same states
    however much padding surrounds it. Returns left-padded ``[B, L, H]``.
    """
    B, L = seq.shape
    idx, lengths = left_to_right(seq)
    packed = pack_padded_sequence(
        gather_time(x, idx), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)  # [B, L, H] right-padded
    return gather_time(out, right_to_left(lengths, L))  # [B, L, H] left-padded


class LSTMRec(SequenceModel):
    name = "lstm"
    config_class = LSTMConfig
    skips_padding = True  # packed sequences: padding never enters the recurrence

    def __init__(self, config: LSTMConfig, n_items: int, content=None) -> None:
        super().__init__(config, n_items, content)
        self.items = self.item_encoder(config.embed_dim, init_std=1.0)  # as nn.Embedding's default
        self.drop = Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embed_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        if config.fusion.mode == "id":  # the original design: a softmax layer over the item ids
            self.out = nn.Linear(config.hidden_dim, n_items + 1)
        else:  # content-aware items: project the state and score it against the item encoder
            self.out_proj = nn.Linear(config.hidden_dim, config.embed_dim)

    def encode(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        x = self.drop(self.items(seq))  # [B, L, E]
        h = self.drop(run_rnn(self.lstm, x, seq))  # [B, L, H]
        return h if self.config.fusion.mode == "id" else self.out_proj(h)  # [B, L, H or E]

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return self.encode(seq)[:, -1]  # [B, H or E]

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        if self.config.fusion.mode == "id":
            return self.out.weight, self.out.bias  # [N+1, H], [N+1]
        return self.items.table(), None  # [N+1, E]


__all__ = ["LSTMRec", "LSTMConfig", "run_rnn", "torch"]
