"""The HTTP service: events in, fresh recommendations out.

``stores`` keeps each user's live events durably (SQLite or Redis), ``engine`` turns a history into
top-k through the evaluator's own ranking path (with incremental RNN encoding from
``incremental`` and an ANN index from :mod:`seqrec.index` for large catalogs), ``batcher`` groups
concurrent requests, and ``app`` is the FastAPI layer over them. Nothing here runs at import.
"""
