"""``seqrec serve DIR [--host H] [--port P] [--store sqlite:PATH | redis://HOST:PORT/DB]``"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from seqrec.errors import SeqrecError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP service: events in, recommendations out, and a web page")
    p.add_argument("artifact", type=Path, help="artifact directory (from seqrec train)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--store", default="sqlite:seqrec-history.sqlite3",
                   help="where live events are kept: sqlite:PATH (default sqlite:seqrec-history."
                        "sqlite3) or redis://HOST:PORT/DB")
    p.add_argument("--api-key-file", type=Path,
                   help="file with the accepted API keys, one per line (also: $SEQREC_API_KEY, "
                        "comma-separated)")
    p.add_argument("--insecure", action="store_true",
                   help="with no API key configured, accept writes without a key")
    p.add_argument("--index", choices=("auto", "exact", "ann"), default="auto",
                   help="top-k search: exact, faiss ANN, or auto (ANN from --ann-threshold items)")
    p.add_argument("--ann-threshold", type=int, default=100_000)
    p.add_argument("--nprobe", type=int, default=None, help="ANN lists visited per query")
    p.add_argument("--index-cache", type=Path, default=None,
                   help="folder where built ANN indexes are kept between starts")
    p.add_argument("--no-incremental", action="store_true",
                   help="re-encode every history instead of continuing cached RNN states")
    p.add_argument("--compile", action="store_true",
                   help="compile the model with torch.compile at start (needs g++; faster requests)")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch / faiss threads for inference (default 1: best latency when "
                        "requests overlap)")
    p.add_argument("--inference-thread", choices=("auto", "on", "off"), default="auto",
                   help="compute recommendations on a thread of their own (on), on the event "
                        "loop (off), or on a thread only with an ANN index (auto, the default)")
    p.add_argument("--max-batch", type=int, default=64,
                   help="most concurrent recommendation requests computed together")
    p.add_argument("--max-events", type=int, default=1000, help="most events per POST /events")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body")
    p.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="json: one object per line (default); text: plain lines")
    p.add_argument("--no-access-log", action="store_true", help="no log line per request")
    p.set_defaults(func=cmd_serve)


def configure_logging(fmt: str, access_log: bool) -> None:
    from seqrec.serve.logs import JsonFormatter

    root = logging.getLogger()
    if fmt == "json":
        for h in root.handlers:
            h.setFormatter(JsonFormatter())
    if not access_log:
        logging.getLogger("seqrec.serve.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise SeqrecError('serving needs the serve extra: pip install "seqrec[serve]"') from None
    import torch

    from seqrec.serve.app import create_app
    from seqrec.serve.auth import API_KEY_ENV, load_api_keys
    from seqrec.serve.engine import EngineOptions
    from seqrec.serve.settings import ServeSettings

    configure_logging(args.log_format, not args.no_access_log)
    if args.threads < 1:
        raise SeqrecError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:  # pragma: no cover - faiss is only needed for the ANN index
        pass
    keys = load_api_keys(os.environ.get(API_KEY_ENV), args.api_key_file)
    settings = ServeSettings(
        artifact=args.artifact, store=args.store, api_keys=keys, insecure=args.insecure,
        engine=EngineOptions(index=args.index, ann_threshold=args.ann_threshold, nprobe=args.nprobe,
                             index_cache=str(args.index_cache) if args.index_cache else None,
                             incremental=not args.no_incremental,
                             compile=args.compile),
        inference_thread=args.inference_thread, max_batch=args.max_batch,
        max_events=args.max_events, max_body_bytes=args.max_body_bytes,
        reload_on_sighup=True)
    if not args.artifact.is_dir():
        raise SeqrecError(f"no artifact directory at {args.artifact}")
    app = create_app(settings)
    log.info("serving", extra={"artifact": str(args.artifact), "store": args.store,
                               "url": f"http://{args.host}:{args.port}/", "auth": bool(keys),
                               "insecure": args.insecure})
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False,
                            server_header=False, timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
