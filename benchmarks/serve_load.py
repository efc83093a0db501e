"""Serving benchmark: a real ``seqrec serve`` process under load from this (separate) process on
loopback, and a synthetic 1M-item catalog served through the ANN index.

1. ``beauty``: the Beauty artifact behind the default store (SQLite, WAL, fsync per commit);
   open-loop load at a constant rate (default 200 requests/s for 60 s after a 5 s warm-up), a mix
   of recommendation requests for random users (80%) and events (20%). Latency runs from the
   moment a request was *due* to the end of its response, so a server that falls behind cannot
   hide it (no coordinated omission).
2. ``batching``: in process, what answering 32 requests as one batch saves over 32 single calls.
3. ``million``: 1,000,000 items (Beauty's 12,101 trained item vectors plus synthetic ones mixed
   from pairs of them, with noise), the Beauty SASRec model on top. Recall@10 of the faiss index
   against exact top-k for 1,000 real Beauty histories (seen items masked, as served), then the
   same load against a server using that index.

    python benchmarks/serve_load.py --artifact runs/beauty-sasrec
    python benchmarks/serve_load.py --artifact runs/beauty-sasrec --only beauty --duration 20
    python benchmarks/serve_load.py --artifact runs/beauty-sasrec --only beauty --repeat 5

Prints a table and writes ``benchmarks/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
API_KEY = "benchmark-key-0123456789"


# ------------------------------------------------------------------------------------------------
# the server process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_store(path: Path) -> str:
    """A ``sqlite:`` store URL at ``path`` with nothing in it (a reused --work folder keeps
    the last run's events, which would lengthen the histories this run serves)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:{path}"


class Server:
    def __init__(self, artifact: Path, store: str, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SEQREC_API_KEY": API_KEY}
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqrec", "serve", str(artifact), "--port", str(self.port),
             "--store", store, *extra], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        import httpx

        deadline = time.monotonic() + 900  # building a 1M-item index takes minutes
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError("server did not start")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server process has used so far (Linux ``/proc``; else
        None): divided by the requests served, a cost per request that other load on the machine
        does not inflate the way it inflates latency."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# ------------------------------------------------------------------------------------------------
# open-loop load


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: a load generator must cost far less
    than the server it measures (httpx's async pool slows down badly with thousands of queued
    requests, which is exactly when a server under test falls behind)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        await self.writer.drain()
        assert self.reader is not None
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _load(url: str, rate: float, duration: float, warmup: float, users: list[Any],
                items: list[Any], event_share: float, seed: int, connections: int = 64,
                ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = int(rate * (duration + warmup))
    kinds = rng.random(n) < event_share
    who = rng.integers(0, len(users), n)
    what = rng.integers(0, len(items), n)
    host, port = url.removeprefix("http://").split(":")
    records: list[tuple[str, float, float, str]] = []  # kind, due, latency, outcome
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    key = {"X-API-Key": API_KEY}

    async def worker() -> None:
        conn = Connection(host, int(port))
        while (job := await queue.get()) is not None:
            i, due = job
            try:
                if kinds[i]:
                    body = json.dumps({"user_id": users[who[i]], "item_id": items[what[i]]}).encode()
                    status, data = await conn.request("POST", "/events", body, key)
                else:
                    status, data = await conn.request(
                        "GET", f"/users/{users[who[i]]}/recommendations?k=10")
                    if status == 200 and len(json.loads(data)["items"]) != 10:
                        status = -1
                outcome = str(status) if status != -1 else "short-list"
            except Exception as e:  # noqa: BLE001 - every failure counts as an error
                outcome = type(e).__name__
                conn.close()
                conn = Connection(host, int(port))
            records.append(("event" if kinds[i] else "recommend", due - t0, loop.time() - due,
                            outcome))
        conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    t0 = loop.time() + 0.1
    for i in range(n):  # open loop: request i is due at t0 + i / rate, whatever came before
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = loop.time() - t0
    out: dict[str, Any] = {"rate_target": rate, "duration_s": duration, "warmup_s": warmup,
                           "event_share": event_share, "connections": connections,
                           "wall_s": round(wall, 2), "sent": n}
    measured = [r for r in records if r[1] >= warmup]
    out["throughput_rps"] = round(len(measured) / duration, 1)
    for kind in ("recommend", "event", "all"):
        rows = [r for r in measured if kind == "all" or r[0] == kind]
        lat = np.array([r[2] for r in rows]) * 1000
        errors = [r[3] for r in rows if r[3] != "200"]
        out[kind] = {
            "requests": len(rows),
            "errors": len(errors),
            "error_kinds": {e: errors.count(e) for e in sorted(set(errors))},
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
            "max_ms": round(float(lat.max()), 2) if len(lat) else None,
        }
    return out


def load(url: str, **kw: Any) -> dict[str, Any]:
    return asyncio.run(_load(url, **kw))


# ------------------------------------------------------------------------------------------------
# scenarios


def bench_beauty(artifact: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    vocab = json.loads((artifact / "vocab.json").read_text())
    work.mkdir(parents=True, exist_ok=True)
    server = Server(artifact, fresh_store(work / "beauty.sqlite3"), work / "beauty-server.log",
                    "--threads", str(args.threads), *args.server_arg)
    try:
        cpu0 = server.cpu_seconds()
        res = load(server.url, rate=args.rate, duration=args.duration, warmup=args.warmup,
                   users=vocab["users"], items=vocab["items"], event_share=args.event_share,
                   seed=0)
        cpu1 = server.cpu_seconds()
        if cpu0 is not None and cpu1 is not None:  # warm-up requests included: all of them
            res["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / res["sent"], 3)
        import httpx

        res["server"] = httpx.get(f"{server.url}/health").json()["model"]
        metrics = httpx.get(f"{server.url}/metrics").text
        res["server_batch_sizes"] = [line for line in metrics.splitlines()
                                     if line.startswith("seqrec_inference_batch_size_")]
    finally:
        server.stop()
    return res


def bench_beauty_runs(artifact: Path, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--repeat`` runs, each against a freshly started server and store: the spread between
    runs on a shared machine is part of the result."""
    runs = []
    for n in range(args.repeat):
        runs.append(bench_beauty(artifact, work / f"run{n}", args))
        r = runs[-1]["recommend"]
        print(f"  beauty run {n + 1}/{args.repeat}: recommend p50 {r['p50_ms']} ms, p99 "
              f"{r['p99_ms']} ms, {r['errors']} errors", flush=True)
    return runs


def bench_batching(artifact: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from seqrec.serve.engine import Engine, Query

    torch.set_num_threads(1)
    engine = Engine.load(artifact)
    users = engine.users.ids[:32 * 20]
    queries = [Query(live_items=[], k=10, user=u) for u in users]
    for q in queries[:32]:
        engine.recommend([q])
    t = time.perf_counter()
    for q in queries:
        engine.recommend([q])
    single = (time.perf_counter() - t) / len(queries)
    t = time.perf_counter()
    for i in range(0, len(queries), 32):
        engine.recommend(queries[i : i + 32])
    batched = (time.perf_counter() - t) / len(queries)
    return {"single_ms_per_request": round(single * 1000, 3),
            "batch32_ms_per_request": round(batched * 1000, 3),
            "speedup": round(single / batched, 2)}


def build_million(beauty: Path, out: Path, n_items: int, seed: int = 0) -> Path:
    """The Beauty artifact with its item table grown to ``n_items`` (synthetic items mixed from
    pairs of trained ones plus noise); users, histories and the model's other weights kept."""
    import polars as pl
    import torch

    from seqrec.artifact import load_artifact, save_artifact
    from seqrec.data.log import ItemCatalog
    from seqrec.data.preprocess import Sequences
    from seqrec.data.vocab import Vocab
    from seqrec.models import build_model, config_dict

    if (out / "weights.safetensors").exists():
        return out
    art = load_artifact(beauty)
    W = art.model.item_table()[0].detach()[1:]  # [N0, D]
    n0, d = W.shape
    g = torch.Generator().manual_seed(seed)
    m = n_items - n0
    a = torch.randint(0, n0, (m,), generator=g)
    b = torch.randint(0, n0, (m,), generator=g)
    w = torch.rand(m, 1, generator=g)
    noise = 0.5 * W.std() * torch.randn(m, d, generator=g)
    W_new = torch.cat([W, w * W[a] + (1 - w) * W[b] + noise])  # [N, D]
    spec = config_dict(art.model)
    model = build_model(spec, n_items, seed)
    # every item-sized tensor of the trained model must be the item table: grow it, keep the rest
    W_full = art.model.item_table()[0].detach()  # [N0+1, D]
    state = model.state_dict()
    for key, value in art.model.state_dict().items():
        if value.shape[:1] == (n0 + 1,):
            if not torch.equal(value, W_full):
                raise SystemExit(f"cannot grow {key}: item-sized but not the item table")
            state[key] = torch.cat([W_full, W_new[n0:]])
        else:
            state[key] = value
    model.load_state_dict(state)
    assert torch.equal(model.item_table()[0].detach()[1:], W_new)
    if art.items.is_int:  # new ids in the data set's own type
        first = max(art.items.ids) + 1
        ids = list(art.items.ids) + [first + j for j in range(m)]
    else:
        ids = list(art.items.ids) + [f"synthetic-{j}" for j in range(m)]
    seqs = Sequences(users=art.users, items_vocab=Vocab(ids), offsets=art.seqs.offsets,
                     items=art.seqs.items, times=art.seqs.times, report=art.seqs.report)
    old = art.catalog.df.select("item_id", "title")
    new = pl.DataFrame({"item_id": pl.Series(ids[n0:], dtype=old.schema["item_id"]),
                        "title": [f"synthetic item {j}" for j in range(m)]})
    catalog = ItemCatalog(pl.concat([old, new]))
    save_artifact(out, model=model.eval(), run_config=art.run_config, seqs=seqs, catalog=catalog,
                  metrics={"note": "synthetic 1M-item catalog for the serving benchmark"},
                  history=[], report={"synthetic": True, "from": str(beauty)})
    return out


def bench_million(beauty: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from seqrec.evaluate.ranking import history_batch
    from seqrec.index import ExactIndex, recall_at_k
    from seqrec.index.ann import FaissIndex
    from seqrec.recommend import Recommender
    from seqrec.serve.engine import artifact_version

    torch.set_num_threads(2)
    t = time.perf_counter()
    path = build_million(beauty, work / "million", args.million_items)
    built_s = time.perf_counter() - t
    rec = Recommender.load(path)
    W, b = rec.model.item_table()
    W = W.detach()
    cache = work / "index-cache"
    t = time.perf_counter()
    ann = FaissIndex.build(W, None if b is None else b.detach(), nprobe=args.nprobe,
                           cache_dir=cache, cache_key=artifact_version(path))
    index_s = time.perf_counter() - t
    # 1,000 real Beauty histories (every event of a user, as served for a known user)
    seqs = rec.artifact.seqs
    rng = np.random.default_rng(1)
    users = rng.choice(seqs.n_users, 1000, replace=False)
    hist, seen = history_batch(seqs.items, seqs.offsets[users], seqs.offsets[users + 1],
                               rec.model.max_len, "cpu", True)
    with torch.no_grad():
        q = rec.model.query(hist)
    t = time.perf_counter()
    exact = torch.cat([ExactIndex(W, None).search(q[i : i + 100], 10, seen[i : i + 100])[1]
                       for i in range(0, 1000, 100)])
    exact_s = (time.perf_counter() - t) / 1000
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    lat = []
    approx = []
    for i in range(1000):
        t = time.perf_counter()
        approx.append(ann.search(q[i : i + 1], 10, seen[i : i + 1])[1])
        lat.append(time.perf_counter() - t)
    approx_t = torch.cat(approx)
    out: dict[str, Any] = {
        "items": args.million_items, "artifact_build_s": round(built_s, 1),
        "index": ann.describe(), "index_build_or_load_s": round(index_s, 1),
        "recall_at_10": round(recall_at_k(approx_t, exact), 4),
        "exact_topk_ms_per_query": round(exact_s * 1000, 2),
        "ann_search_p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3),
        "ann_search_p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3),
    }
    extra = ["--index-cache", str(cache), "--threads", str(args.threads), *args.server_arg]
    if args.nprobe:
        extra += ["--nprobe", str(args.nprobe)]
    t = time.perf_counter()
    server = Server(path, fresh_store(work / "million.sqlite3"), work / "million-server.log", *extra)
    out["server_start_s"] = round(time.perf_counter() - t, 1)
    try:
        vocab = json.loads((path / "vocab.json").read_text())
        out["load"] = load(server.url, rate=args.rate, duration=args.million_duration,
                           warmup=args.warmup, users=vocab["users"], items=vocab["items"],
                           event_share=args.event_share, seed=2)
    finally:
        server.stop()
    return out


# ------------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = ["| scenario | requests | throughput/s | errors | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, res in (("beauty", results.get("beauty")),
                      ("1M items, ANN", (results.get("million") or {}).get("load"))):
        if not res:
            continue
        for kind in ("recommend", "event"):
            r = res[kind]
            lines.append(f"| {name}: {kind} | {r['requests']} | "
                         f"{res['throughput_rps'] if kind == 'recommend' else ''} | {r['errors']} | "
                         f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    runs = results.get("beauty_runs") or []
    if len(runs) > 1:
        for n, res in enumerate(runs):
            r = res["recommend"]
            lines.append(f"| beauty run {n + 1}: recommend | {r['requests']} | {res['throughput_rps']} "
                         f"| {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
                         f"{r['max_ms']} |")
        p50 = [res["recommend"]["p50_ms"] for res in runs]
        p99 = [res["recommend"]["p99_ms"] for res in runs]
        lines.append("")
        lines.append(f"beauty, {len(runs)} runs: recommend p50 {min(p50)}-{max(p50)} ms, p99 "
                     f"{min(p99)}-{max(p99)} ms (<= 15 ms in {sum(p <= 15 for p in p99)} of "
                     f"{len(runs)}); the beauty row above is the run with the highest p99")
    m = results.get("million")
    if m:
        lines.append("")
        lines.append(f"1M items: recall@10 of the ANN index against exact top-k = "
                     f"{m['recall_at_10']} ({m['index']}); ANN search p50 {m['ann_search_p50_ms']}"
                     f" ms, p99 {m['ann_search_p99_ms']} ms; exact top-k "
                     f"{m['exact_topk_ms_per_query']} ms/query in batches of 100")
    cpu = (results.get("beauty") or {}).get("server_cpu_ms_per_request")
    if cpu is not None:
        lines.append(f"beauty: the server used {cpu} ms of CPU per request (events included)")
    bt = results.get("batching")
    if bt:
        lines.append(f"batching (in process): {bt['single_ms_per_request']} ms per request alone, "
                     f"{bt['batch32_ms_per_request']} ms in batches of 32 ({bt['speedup']}x)")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True, help="a Beauty SASRec artifact")
    p.add_argument("--only", choices=("beauty", "batching", "million"), action="append")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the beauty scenario this many times (fresh server each time)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (beauty)")
    p.add_argument("--million-duration", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--event-share", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1, help="server inference threads")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for `seqrec serve` (repeat: --server-arg=--max-batch "
                        "--server-arg=16)")
    p.add_argument("--million-items", type=int, default=1_000_000)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = p.parse_args()
    todo = args.only or ["beauty", "batching", "million"]
    work = args.work or Path(tempfile.mkdtemp(prefix="seqrec-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average_before": os.getloadavg()},
        "artifact": str(args.artifact), "server_args": ["--threads", str(args.threads), *args.server_arg],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and args.out.exists():  # a rerun of some parts keeps the others' results
        kept = json.loads(args.out.read_text())
        names = [n for n in ("beauty", "beauty_runs", "batching", "million")
                 if n in kept and n.split("_")[0] not in todo]
        results.update({n: kept[n] for n in names})
        results["kept_from_previous_run"] = names  # the machine lines describe this run only
    for name, run in (("beauty", bench_beauty_runs), ("batching", bench_batching),
                      ("million", bench_million)):
        if name in todo:
            results[name] = run(args.artifact, work, args)
            if name == "beauty":  # the worst run stands for the scenario; all are kept
                results["beauty_runs"] = results["beauty"]
                results["beauty"] = max(results["beauty_runs"], key=lambda r: r["recommend"]["p99_ms"])
            results["machine"]["load_average_after"] = os.getloadavg()
            args.out.write_text(json.dumps(results, indent=2, default=str))  # after each part
    print(table(results))
    print(f"\nwritten: {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
