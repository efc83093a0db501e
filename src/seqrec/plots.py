"""Training-history plot (PNG). Uses matplotlib's object API: no pyplot, no global backend."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from seqrec.fsutil import atomic_write_bytes


def plot_history(history: list[dict[str, Any]], path: str | Path, title: str = "",
                 metric: str = "NDCG@10") -> None:
    """Loss and validation metrics per epoch, side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_val = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history if h.get("loss") is not None]
    ax_loss.plot(epochs, [h["loss"] for h in history if h.get("loss") is not None], marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    val = [h for h in history if h.get("valid")]
    for name in (metric, metric.replace("NDCG", "HR"), metric.replace("NDCG", "MRR")):
        if val and name in val[0]["valid"]:
            ax_val.plot([h["epoch"] for h in val], [h["valid"][name] for h in val], marker="o", ms=3,
                        label=name)
    if val:
        best = max(val, key=lambda h: h["valid"].get(metric, float("-inf")))
        ax_val.axvline(best["epoch"], color="grey", ls="--", lw=1, label=f"best epoch {best['epoch']}")
        ax_val.legend()
    ax_val.set(xlabel="epoch", ylabel="validation", title="validation (full ranking)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
