"""Everything a lent GPU should run, as one prepared command that ends inside a time budget.

A GPU comes to this project only by chance, for 15 minutes a session, on a machine that cannot
reach the package registries. So the work is packed here and run there in one go:

    python benchmarks/gpu.py --pack                 # here: .gpu/ with the data and the wheels
    # there (the device tool's run, carry [".gpu"]), the command --pack prints:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && \\
      PYTHONPATH=/tmp/site:src SEQREC_DATA_DIR=.gpu/data python3 benchmarks/gpu.py --out "$OUT" \\
      --budget-minutes 7

It also runs on a CPU (``--device cpu --budget-minutes 3 --runs smoke``), which is how it is
checked on a machine without a GPU. Stages, in order:

1. ``env``: the card (name, memory, capability), torch and CUDA versions, bf16 support, and the
   measured fp32 and bf16 matrix-multiply rates (the ceilings of the FLOP floor).
2. ``parity``: every trainable model (SASRec, BERT4Rec, HSTU, GRU4Rec, LSTM) from the same
   weights on the CPU and on the device, on a real ML-100K batch: the inference path's
   cross-entropy, the full-softmax training loss (where it is deterministic: BERT4Rec draws its
   masks) and every gradient agree (fp32, TF32 off); a bf16 autocast step is finite and near the
   fp32 loss; each sampled loss of the menu runs; and the untrained model's ML-100K validation
   ranks are the same on both. A failed check is recorded with its error and the script goes on.
3. ``runs``: the large configs, trained side by side as ``seqrec train`` processes on the one
   device (small models leave a large card idle between kernel launches, so several at once use it
   better than one after another), each with ``train.max_minutes`` set so that all end inside the
   budget; selection on validation, test once, as everywhere else.

Writes ``gpu.json`` (everything) and ``gpu.md`` (the tables, the card named) into ``--out``, after
every stage, so a run stopped at its limit still leaves what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

import scaling

from seqrec.config import EvalConfig, RunConfig
from seqrec.data.batching import train_pairs, train_times
from seqrec.data.datasets import default_data_dir
from seqrec.evaluate.protocol import evaluate
from seqrec.fsutil import atomic_write_text
from seqrec.losses import make_loss
from seqrec.models import build_model
from seqrec.pipeline import prepare
from seqrec.train.speed import autocast, device_name, measure_matmul_rate

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
PACK = ROOT / ".gpu"
DATASETS = {"ml-1m": "ml-1m", "ml-100k": "ml-100k", "beauty": "amazon_beauty"}
"""seqrec dataset name -> its folder in the data directory (what ``--pack`` copies)."""

WHEELS = ["polars==1.31.0"]
"""What the device's Python (3.12, torch, numpy, safetensors, matplotlib, tqdm already there)
lacks for seqrec. polars 1.31 is one 35 MB wheel; 2.x splits into a 54 MB runtime, and the
working tree that travels is limited to 64 MiB."""

def scaling_sets(dataset: str, size: str) -> dict[str, Any]:
    """A row of the scaling table (``scaling.settings``) as ``--set`` overrides of the model and
    training sections; the cap is the budget's, set when the run starts."""
    cfg = scaling.settings(dataset, size, 0.0)
    return {f"{sec}.{k}": v for sec in ("model", "train") for k, v in cfg[sec].items()
            if k not in ("name", "max_minutes")}


LARGE = {"d_model": 256, "n_blocks": 8, "n_heads": 4, "d_ff": 1024, "max_len": 200}
RUNS: dict[str, dict[str, Any]] = {
    # the best CPU config (before its refit), to see the card reproduce it (and how much sooner)
    "hstu-deep-mh-s100-ml-1m": {"config": "hstu-deep-mh-s100-ml-1m.toml", "set": {}},
    # wider and longer than a CPU affords: the ML-1M target (0.195 / 0.335) is what they are for.
    # All start from that frozen config: the items already read taken out of the training softmax
    # (train.mask_history; on the CPU it lifted the 8-block model's best validation more than
    # depth, width or the feed-forward layer did) and its overlapping windows (train.window_stride)
    "hstu-wide-ml-1m": {"config": "hstu-deep-mh-s100-ml-1m.toml",
                        "set": {"model.d_model": 128, "model.dropout": 0.3, "train.epochs": 100,
                                "train.patience": 100}},
    # the 8-block model with a SwiGLU feed-forward layer in every block (on the CPU it lifted the
    # 2-block model's ML-1M validation by 0.006 in 15 epochs; the 8-block model's 40 CPU epochs at
    # inner size 128 ended level with hstu-deep), 4 x d inner, trained longer
    "hstu-deep-ffn-ml-1m": {"config": "hstu-deep-mh-s100-ml-1m.toml",
                            "set": {"model.ffn": 256, "train.epochs": 100, "train.patience": 100}},
    "hstu-large-ml-1m": {"config": "hstu-deep-mh-s100-ml-1m.toml",
                         "set": {"model.d_model": 256, "model.n_heads": 4, "model.dropout": 0.3,
                                 "train.lr": 1e-3, "train.epochs": 100, "train.patience": 100}},
    "sasrec-large-ml-1m": {"config": "sasrec-cosine-ml-1m.toml",
                           "set": {**{f"model.{k}": v for k, v in LARGE.items()},
                                   "model.dropout": 0.3, "train.lr": 1e-3, "train.epochs": 100,
                                   "train.patience": 100, "train.mask_history": True}},
    "bert4rec-large-ml-1m": {"config": "bert4rec-ml-100k.toml",
                             "set": {"data.name": "ml-1m", "model.max_len": 200, "model.d_model": 256,
                                     "model.n_heads": 4, "model.d_ff": 1024, "train.epochs": 200,
                                     "train.patience": 200, "train.lr": 1e-3}},
    # the scaling table's L rows (scaling.py), which 6 CPU minutes left near chance
    "scaling-L-beauty": {"config": None, "dataset": "beauty", "set": scaling_sets("beauty", "L")},
    "scaling-L-ml-1m": {"config": None, "dataset": "ml-1m", "set": scaling_sets("ml-1m", "L")},
    # for checking the script itself on a CPU: two tiny runs of a few epochs
    "smoke-sasrec": {"config": "sasrec-ml-100k.toml", "set": {"train.epochs": 2, "model.max_len": 20},
                     "smoke": True},
    "smoke-hstu": {"config": "hstu-ml-100k.toml", "set": {"train.epochs": 2, "model.max_len": 20},
                   "smoke": True},
}
RUN_SETS = {
    "all": ["hstu-deep-mh-s100-ml-1m", "hstu-deep-ffn-ml-1m", "hstu-wide-ml-1m", "hstu-large-ml-1m",
            "sasrec-large-ml-1m", "scaling-L-beauty", "scaling-L-ml-1m"],
    "ml-1m": [k for k in RUNS if k.endswith("ml-1m") and not k.startswith("scaling")],
    "large": ["hstu-large-ml-1m", "sasrec-large-ml-1m", "bert4rec-large-ml-1m", "scaling-L-beauty",
              "scaling-L-ml-1m"],
    "scaling": ["scaling-L-beauty", "scaling-L-ml-1m"],
    "smoke": ["smoke-sasrec", "smoke-hstu"],
}
PARITY_MODELS = ["sasrec", "bert4rec", "hstu", "gru4rec", "lstm"]


def say(msg: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# packing (here)


def pack(data_dir: Path, dest: Path, datasets: list[str]) -> None:
    """Copy the data folders and download the wheels the device lacks into ``dest`` (git-ignored:
    ``/.gpu/``), then print the device command."""
    (dest / "data").mkdir(parents=True, exist_ok=True)
    for name in datasets:
        src = data_dir / DATASETS[name]
        if not src.is_dir():
            raise SystemExit(f"--pack: {src} does not exist (set --data-dir or SEQREC_DATA_DIR)")
        shutil.copytree(src, dest / "data" / DATASETS[name], dirs_exist_ok=True)
    whl = dest / "whl"
    whl.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", str(whl), *WHEELS]
    subprocess.run(cmd, check=True)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    say(f"packed {dest} ({size / 2**20:.1f} MiB; the working tree that travels is limited to 64 MiB)")
    print("device command (carry [\".gpu\"], timeout_s 600):\n"
          "  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl && "
          "PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:src SEQREC_DATA_DIR=.gpu/data "
          "python3 benchmarks/gpu.py --out \"$OUT\" --budget-minutes 7")


# ----------------------------------------------------------------------------------------------
# stage 1: the machine


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"device": str(device), "name": device_name(device),
                           "torch": torch.__version__, "python": platform.python_version(),
                           "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(cuda=torch.version.cuda, memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                   bf16=torch.cuda.is_bf16_supported())
    env["matmul_gflops_fp32"] = measure_matmul_rate(device)
    if device.type == "cuda" and env.get("bf16"):
        env["matmul_gflops_bf16"] = measure_matmul_rate(device, torch.bfloat16)
    return env


# ----------------------------------------------------------------------------------------------
# stage 2: the same numbers on the CPU and on the device


def _batch(split: Any, max_len: int, rows: int, with_time: bool) -> tuple[torch.Tensor, ...]:
    """The first ``rows`` users' training windows of a real split: inputs, targets, times."""
    s, e = split.train_start[:rows], split.train_end[:rows]
    items, times = split.train_arrays()
    x, y = train_pairs(items, s, e, max_len)
    t = train_times(times, s, e, max_len) if with_time and times is not None else None
    return torch.from_numpy(x), torch.from_numpy(y), None if t is None else torch.from_numpy(t)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[str, float]:
    """The parameter whose gradient differs most, relative to its size, and that difference."""
    worst = ("", 0.0)
    for n in a:
        rel = float((a[n] - b[n]).norm() / a[n].norm().clamp(min=1e-12))
        worst = max(worst, (n, rel), key=lambda t: t[1])
    return worst


def _query_ce(model: Any, x: torch.Tensor, t: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the inference path (``scores``: the query against the ranking table) at
    each row's next item: deterministic for every model, BERT4Rec's appended mask token included."""
    return torch.nn.functional.cross_entropy(model.scores(x, t)[:, 1:].float(), target - 1)


def _backward(model: Any, f: Any) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    v = f()
    v.backward()
    return v.item(), _grads(model)


def check_model(name: str, split: Any, device: torch.device, rtol: float) -> dict[str, Any]:
    """One model's checks; raises on an error (the caller records it)."""
    cpu = torch.device("cpu")
    spec: dict[str, Any] = {"name": name, "max_len": 30}
    if name in ("gru4rec", "lstm"):
        spec.update(embed_dim=32, hidden_dim=32)
    else:
        spec.update(d_model=32, n_blocks=2)
    a = build_model(spec, split.seqs.n_items, seed=0)
    b = build_model(spec, split.seqs.n_items, seed=0).to(device)
    a.eval()
    b.eval()  # dropout off: the two must compute the same function
    x, y, t = _batch(split, 30, 64, a.uses_time)
    xd, yd, td = x.to(device), y.to(device), None if t is None else t.to(device)
    last = y[:, -1] > 0
    out: dict[str, Any] = {}
    # the inference path, for every model
    qa, ga = _backward(a, lambda: _query_ce(a, x[last], None if t is None else t[last], y[last, -1]))
    qb, gb = _backward(b, lambda: _query_ce(b, xd[last.to(device)], None if td is None else
                                            td[last.to(device)], yd[last.to(device), -1]))
    out["query_ce_cpu"], out["query_ce_device"] = qa, qb
    out["query_rel_diff"] = abs(qa - qb) / abs(qa)
    out["worst_grad"], out["worst_grad_rel_diff"] = _worst(ga, gb)
    # the training loss: compared where it is deterministic (BERT4Rec draws its masks)
    la, ga = _backward(a, lambda: a.loss(x, y, times=t))
    la2 = a.loss(x, y, times=t).item()
    lb, gb = _backward(b, lambda: b.loss(xd, yd, times=td))
    out["loss_cpu"], out["loss_device"] = la, lb
    out["loss_deterministic"] = la == la2
    if la == la2:
        out["loss_rel_diff"] = abs(la - lb) / abs(la)
        g_name, g_rel = _worst(ga, gb)
        if g_rel > out["worst_grad_rel_diff"]:
            out["worst_grad"], out["worst_grad_rel_diff"] = g_name, g_rel
    else:  # the same kind of draw on both: equal only in distribution
        out["loss_rel_diff"] = 0.0
    with autocast(device, torch.bfloat16):
        lbf, _ = _backward(b, lambda: b.loss(xd, yd, times=td))
    out["loss_bf16"] = lbf
    out["bf16_rel_diff"] = abs(lbf - lb) / abs(lb) if out["loss_deterministic"] else None
    counts = torch.from_numpy(split.train_item_counts())
    sampled = {}
    for loss in ("sampled", "bce", "gbce"):
        fn = make_loss(loss, n_items=split.seqs.n_items, negatives=128, sampler="in-batch",
                       item_counts=counts)
        sampled[loss], _ = _backward(b, lambda fn=fn: b.loss(xd, yd, fn, times=td))
    out["sampled_losses"] = sampled
    ea = evaluate(a, split, "valid", EvalConfig(), device=cpu)
    eb = evaluate(b, split, "valid", EvalConfig(), device=device)
    finite = np.isfinite(ea.ranks)
    out["valid_ndcg10_cpu"], out["valid_ndcg10_device"] = ea.metrics["NDCG@10"], eb.metrics["NDCG@10"]
    out["ranks_equal_share"] = float(np.mean(ea.ranks[finite] == eb.ranks[finite]))
    values = [lb, lbf, *sampled.values()]
    out["ok"] = bool(out["query_rel_diff"] < rtol and out["loss_rel_diff"] < rtol
                     and out["worst_grad_rel_diff"] < 10 * rtol
                     and (out["bf16_rel_diff"] is None or out["bf16_rel_diff"] < 0.05)
                     and all(np.isfinite(values)) and out["ranks_equal_share"] > 0.99)
    return out


def parity(device: torch.device, data_dir: Path, rtol: float = 1e-4) -> dict[str, Any]:
    """Every model's checks on ML-100K (real data); errors are recorded, not raised."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the comparison
        torch.backends.cudnn.allow_tf32 = False
    cfg = RunConfig.from_dict({"data": {"name": "ml-100k"}, "model": {"name": "sasrec"}})
    split = prepare(cfg, data_dir).split
    results: dict[str, Any] = {}
    for name in PARITY_MODELS:
        t = time.perf_counter()
        try:
            results[name] = check_model(name, split, device, rtol)
        except Exception as e:  # noqa: BLE001 - every model is checked; the error is the result
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc(limit=6)}
        results[name]["seconds"] = time.perf_counter() - t
        r = results[name]
        say(f"parity {name}: {'ok' if r['ok'] else 'FAILED'}"
            + (f" (query CE {r['query_ce_cpu']:.5f} / {r['query_ce_device']:.5f}, loss "
               f"{r['loss_cpu']:.5f} / {r['loss_device']:.5f}, worst gradient "
               f"{r['worst_grad_rel_diff']:.1e}, ranks equal "
               f"{r['ranks_equal_share']:.4f})" if "error" not in r else f": {r['error']}"))
    return results


# ----------------------------------------------------------------------------------------------
# stage 3: the large configs, side by side


def run_argv(name: str, spec: dict[str, Any], device: str, minutes: float, threads: int,
             out: Path) -> list[str]:
    """The ``seqrec train`` command line of one run."""
    argv = [sys.executable, "-m", "seqrec", "train", "--output", str(out), "--device", device,
            "--no-progress"]
    if spec.get("config"):
        argv += ["--config", str(CONFIGS / spec["config"])]
    else:
        argv += ["--data", spec["dataset"], "--model", "sasrec"]
    sets = {**spec["set"], "train.max_minutes": round(minutes, 2), "train.threads": threads}
    for k, v in sets.items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    return argv


def summarise(name: str, art: Path, log: str, seconds: float) -> dict[str, Any]:
    """One run's row from its artifact (``metrics.json``, ``history.json``, ``config.json``)."""
    row: dict[str, Any] = {"run": name, "wall_seconds": seconds}
    if not (art / "metrics.json").exists():
        row.update(ok=False, log_tail=log[-3000:])
        return row
    m = json.loads((art / "metrics.json").read_text())
    hist = json.loads((art / "history.json").read_text())
    cfg = RunConfig.from_dict(json.loads((art / "config.json").read_text())["run"])
    trained = [h for h in hist if h.get("train_seconds")]
    row.update(ok=True, model=cfg.model, train={k: getattr(cfg.train, k) for k in (
        "loss", "batch_size", "lr", "lr_schedule", "epochs", "precision", "max_minutes")},
        dataset=cfg.data.name, valid=m["valid"], test=m["test"], best_epoch=m["best_epoch"],
        epochs=len(trained), stop_reason=m["stop_reason"], train_seconds=m["train_seconds"],
        seconds_per_epoch=float(np.median([h["train_seconds"] for h in trained])) if trained else None,
        floor_ratio=float(np.median([h["train_seconds"] / h["floor_seconds"] for h in trained
                                     if h.get("floor_seconds")])) if trained else None,
        processor=m.get("processor"), params=_params(art))
    return row


def _params(art: Path) -> int | None:
    try:
        from safetensors import safe_open
        with safe_open(str(art / "weights.safetensors"), "pt") as f:
            return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))
    except Exception:  # noqa: BLE001 - a count for the table only
        return None


def runs(names: list[str], device: str, deadline: float, jobs: int) -> list[dict[str, Any]]:
    """Train ``names`` as parallel processes (``jobs`` at a time), capped to end by ``deadline``
    (``time.perf_counter()`` seconds); a process still alive then is stopped and says so."""
    threads = max(1, (os.cpu_count() or 2) // max(1, min(jobs, len(names))))
    tmp = Path(tempfile.mkdtemp(prefix="seqrec-gpu-"))
    pending, live, rows = list(names), [], []
    reserve = 75.0  # evaluation, test and writing after the training cap
    while pending or live:
        while pending and len(live) < jobs:
            name = pending.pop(0)
            minutes = (deadline - time.perf_counter() - reserve) / 60
            if minutes < 0.5:
                rows.append({"run": name, "ok": False, "skipped": "no time left in the budget"})
                continue
            art = tmp / name
            log = open(tmp / f"{name}.log", "w+", encoding="utf-8")
            argv = run_argv(name, RUNS[name], device, minutes, threads, art)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
            say(f"run {name}: {minutes:.1f} min of training, {threads} threads")
            live.append((name, art, log, time.perf_counter(),
                         subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(1.0)
        for item in list(live):
            name, art, log, t0, proc = item
            late = time.perf_counter() > deadline
            if proc.poll() is None and not late:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            live.remove(item)
            log.seek(0)
            text = log.read()
            log.close()
            row = summarise(name, art, text, time.perf_counter() - t0)
            if late and not row["ok"]:
                row["skipped"] = "stopped at the end of the budget"
            rows.append(row)
            say(f"run {name}: " + (f"valid NDCG@10 {row['valid']['NDCG@10']:.4f}, test "
                                   f"{row['test']['NDCG@10']:.4f} / HR@10 {row['test']['HR@10']:.4f}, "
                                   f"{row['epochs']} epochs of {row['seconds_per_epoch']:.1f} s"
                                   if row["ok"] else f"no result ({row.get('skipped', 'failed')})"))
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------------------------
# the report


def markdown(res: dict[str, Any]) -> str:
    env = res.get("env", {})
    errors = [f"{k}: `{res[k].strip().splitlines()[-1]}`" for k in ("env_error", "parity_error") if k in res]
    lines = [f"# seqrec on {env.get('name', '?')}", "", *([f"- {e}" for e in errors] + [""] if errors else []),
             f"Written by `benchmarks/gpu.py` on {env.get('when', '?')}: torch {env.get('torch')}, "
             f"CUDA {env.get('cuda', '-')}, {env.get('memory_gib', '-')} GiB, {env.get('cpus')} CPUs; "
             f"matrix-multiply rate {env.get('matmul_gflops_fp32', 0):,.0f} GFLOP/s fp32"
             + (f", {env['matmul_gflops_bf16']:,.0f} bf16" if "matmul_gflops_bf16" in env else "") + ".", ""]
    if res.get("parity"):
        lines += ["## Parity with the CPU (ML-100K, d 32, same weights)", "",
                  "| model | inference CE, CPU / device | training loss, CPU / device | worst gradient "
                  "(relative) | bf16 loss (relative) | sampled, bce, gbce | valid ranks equal | ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in res["parity"].items():
            if "error" in r:
                lines.append(f"| {name} | {r['error']} | | | | | | FAILED |")
                continue
            s = r["sampled_losses"]
            bf = "(random masks)" if r["bf16_rel_diff"] is None else f"{r['bf16_rel_diff']:.1e}"
            loss = (f"{r['loss_cpu']:.5f} / {r['loss_device']:.5f}"
                    + ("" if r["loss_deterministic"] else " (random masks: not compared)"))
            lines.append(f"| {name} | {r['query_ce_cpu']:.5f} / {r['query_ce_device']:.5f} | {loss} | "
                         f"{r['worst_grad_rel_diff']:.1e} ({r['worst_grad'] or '-'}) | {bf} | "
                         f"{s['sampled']:.3f}, {s['bce']:.3f}, {s['gbce']:.3f} | "
                         f"{r['ranks_equal_share']:.4f} | {'yes' if r['ok'] else 'NO'} |")
        lines.append("")
    if res.get("runs"):
        lines += ["## Runs (side by side on the one device; leave-one-out, full ranking, seen items "
                  "masked, selection on validation NDCG@10, test once)", "",
                  "| run | model d / blocks / length | parameters | loss | precision | epochs (best) | "
                  "s/epoch | x FLOP floor | valid NDCG@10 | test NDCG@10 | test HR@10 | stopped by |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["runs"]:
            if not r.get("ok"):
                lines.append(f"| {r['run']} | {r.get('skipped', 'failed: see gpu.json')} |"
                             + " |" * 10)
                continue
            m = r["model"]
            lines.append(
                f"| {r['run']} | {m['name']} {m.get('d_model')} / {m.get('n_blocks', '-')} / "
                f"{m.get('max_len')} | {r['params'] or 0:,} | {r['train']['loss']} | "
                f"{r['train']['precision']} | {r['epochs']} ({r['best_epoch']}) | "
                f"{r['seconds_per_epoch']:.1f} | {r['floor_ratio'] or 0:.2f} | {r['valid']['NDCG@10']:.4f} | "
                f"{r['test']['NDCG@10']:.4f} | {r['test']['HR@10']:.4f} | {r['stop_reason']} |")
    return "\n".join(lines) + "\n"


def save(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gpu.json", json.dumps(res, indent=1, default=str))
    atomic_write_text(out / "gpu.md", markdown(res))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", action="store_true", help="prepare .gpu/ here and print the device command")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu to check the script")
    ap.add_argument("--budget-minutes", type=float, default=7.0,
                    help="the whole command ends inside this (the device lends 15 minutes a session, "
                         "its start included)")
    ap.add_argument("--stages", default="env,parity,runs")
    ap.add_argument("--runs", default="all", help=f"a set ({', '.join(RUN_SETS)}) or names, comma-separated")
    ap.add_argument("--jobs", type=int, default=None, help="runs trained at once (default: all of them)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    args = ap.parse_args(argv)
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    if args.pack:
        pack(data_dir, PACK, list(DATASETS))
        return 0
    deadline = time.perf_counter() + args.budget_minutes * 60
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here (use --device cpu to "
                         "check the script)")
    names = RUN_SETS.get(args.runs) or [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    stages = [s.strip() for s in args.stages.split(",")]
    res: dict[str, Any] = {"argv": sys.argv[1:], "budget_minutes": args.budget_minutes}
    # a stage that breaks is recorded and the next one still runs: device minutes are scarce
    if "env" in stages:
        try:
            res["env"] = environment(device)
            say(f"{res['env']['name']}: {res['env']['matmul_gflops_fp32']:,.0f} GFLOP/s fp32")
        except Exception as e:  # noqa: BLE001
            res["env_error"] = traceback.format_exc(limit=6)
            say(f"env FAILED: {type(e).__name__}: {e}")
        save(res, args.out)
    if "parity" in stages:
        try:
            res["parity"] = parity(device, data_dir)
        except Exception as e:  # noqa: BLE001
            res["parity_error"] = traceback.format_exc(limit=6)
            say(f"parity FAILED: {type(e).__name__}: {e}")
        save(res, args.out)
    if "runs" in stages:
        res["runs"] = runs(names, args.device, deadline, args.jobs or len(names))
        save(res, args.out)
    print(markdown(res))
    failed = [n for n, r in res.get("parity", {}).items() if not r["ok"]]
    return 1 if failed or "env_error" in res or "parity_error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
