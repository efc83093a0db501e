"""Per-epoch training checkpoints: everything needed to resume exactly, written atomically.

Stored with ``torch.save`` and read back with ``torch.load(weights_only=True)``: tensors and plain
Python values only, no pickled objects.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec.errors import ArtifactError
from seqrec.fsutil import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(workdir: Path, state: dict[str, Any], rng: np.random.Generator) -> None:
    payload = dict(state)
    payload["np_rng"] = json.dumps(rng.bit_generator.state)
    payload["torch_rng"] = torch.get_rng_state()
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(workdir / CHECKPOINT, buf.getvalue())


def load_checkpoint(workdir: Path, rng: np.random.Generator) -> dict[str, Any]:
    path = workdir / CHECKPOINT
    if not path.exists():
        raise ArtifactError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{path}: unreadable checkpoint ({e})") from None
    rng.bit_generator.state = json.loads(state.pop("np_rng"))
    torch.set_rng_state(state.pop("torch_rng"))
    return state
