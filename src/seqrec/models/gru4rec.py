"""GRU4Rec (Hidasi et al., 2016) with a full-softmax loss: item embedding -> GRU -> projection,
scored against the same item embedding table (tied input/output embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqrec.models.base import Dropout, ModelConfig, SequenceModel
from seqrec.models.lstm import run_rnn


@dataclass
class GRU4RecConfig(ModelConfig):
    embed_dim: int = 64
    """Item embedding size (input and output)."""
    hidden_dim: int = 128
    """GRU state size."""
    num_layers: int = 1
    """Stacked GRU layers."""
    dropout: float = 0.3
    """Dropout on the input embeddings and on the GRU output."""


class GRU4Rec(SequenceModel):
    name = "gru4rec"
    config_class = GRU4RecConfig
    skips_padding = True  # packed sequences: padding never enters the recurrence

    def __init__(self, config: GRU4RecConfig, n_items: int, content=None) -> None:
        super().__init__(config, n_items, content)
        self.items = self.item_encoder(config.embed_dim)
        self.drop = Dropout(config.dropout)
        self.gru = nn.GRU(
            config.embed_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.proj = nn.Linear(config.hidden_dim, config.embed_dim)

    def encode(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        x = self.drop(self.items(seq))  # [B, L, E]
        return self.proj(self.drop(run_rnn(self.gru, x, seq)))  # [B, L, E]

    def query(self, seq: Tensor, times: Tensor | None = None) -> Tensor:
        return self.encode(seq)[:, -1]  # [B, E]

    def item_table(self) -> tuple[Tensor, Tensor | None]:
        return self.items.table(), None  # [N+1, E]
