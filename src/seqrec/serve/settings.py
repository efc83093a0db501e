"""Everything ``seqrec serve`` can be told, in one typed place. The CLI builds it from flags and
the environment; the app only reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seqrec.serve.engine import EngineOptions


@dataclass
class ServeSettings:
    artifact: Path
    """The artifact directory served (and re-read by a reload without a new path)."""
    store: str = "sqlite:seqrec-history.sqlite3"
    """``sqlite:PATH`` or ``redis://HOST:PORT/DB``."""
    api_keys: tuple[str, ...] = ()
    """Keys accepted in the ``X-API-Key`` header by the write, delete and reload endpoints."""
    insecure: bool = False
    """With no key configured, allow writes without one (otherwise they are refused)."""
    engine: EngineOptions = field(default_factory=EngineOptions)
    inference_thread: str = "auto"
    """Where batches run: ``off`` on the event loop (best for small PyTorch work, which holds the
    GIL), ``on`` on a thread of their own (best when the work releases the GIL), ``auto`` a
    thread exactly when the index is ANN. Chosen at start; a reload keeps it."""
    max_batch: int = 64
    """Most recommendation requests computed together as one batch."""
    max_k: int = 1000
    """Largest ``k`` a request may ask for."""
    max_events: int = 1000
    """Most events in one ``POST /events``."""
    max_history: int = 10_000
    """Most items in an explicit history (``POST /recommendations``)."""
    max_body_bytes: int = 1 << 20
    """Largest request body; bigger ones get 413."""
    max_id_length: int = 128
    """Longest user or item id accepted."""
    reload_on_sighup: bool = False
    """Reload the artifact when the process receives SIGHUP (set by the CLI)."""
