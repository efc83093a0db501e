"""One plain training loop for every model: AdamW, gradient clipping, early stopping on the
validation metric, a checkpoint every epoch, exact resume.

Model-specific behaviour lives in the model (``model.loss``) and the loss menu, never here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from seqrec.chunked_softmax import release_buffers
from seqrec.config import EvalConfig, TrainConfig
from seqrec.content.fusion import ItemEncoder
from seqrec.data.batching import (left_pad, length_bucketed_batches, scored_pairs, train_pairs,
                                  train_times, training_windows)
from seqrec.data.split import Split
from seqrec.evaluate.protocol import evaluate
from seqrec.losses import excluding, make_loss
from seqrec.models.base import SequenceModel
from seqrec.train.checkpoint import load_checkpoint, save_checkpoint
from seqrec.train.heap import keep_freed_memory
from seqrec.train.speed import (autocast, autocast_dtype, encoder_flops, loss_flops, maybe_compile,
                                measure_matmul_rate, prefetch)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per epoch: ``epoch``, ``loss``, ``train_seconds``, ``pairs_per_second``, ``flops``,
    ``gflops_per_second``, ``floor_seconds``; and ``eval_seconds``, ``valid`` when evaluated."""
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    stop_reason: str = ""
    seconds: float = 0.0
    matmul_gflops: float = 0.0
    """The machine's measured matrix-multiply rate (GFLOP/s) in the training precision: the
    higher of the readings before and after training (after runs longer than
    :data:`REREAD_CEILING_AFTER_S`), which every ``floor_seconds`` uses."""
    heap: str = "default"
    """Whether freed memory was kept in the process (:func:`seqrec.train.heap.keep_freed_memory`,
    on a CPU): what it set, or ``default``."""

    @property
    def trained(self) -> list[dict[str, Any]]:
        """The epochs that trained (count-based models fit in one pass and have none)."""
        return [h for h in self.history if h.get("loss") is not None]

    @property
    def seconds_per_epoch(self) -> float:
        t = [h["train_seconds"] for h in self.trained]
        return sum(t) / len(t) if t else 0.0


REREAD_CEILING_AFTER_S = 60.0
"""Training longer than this reads the matmul rate again at its end (about half a second) and
keeps the higher reading as every epoch's ceiling."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def selection_eval_config(eval_cfg: EvalConfig, metric: str) -> EvalConfig:
    """``eval_cfg`` with the cut-off of the selection metric (``NDCG@10`` -> 10) included."""
    name, _, k = metric.partition("@")
    if name not in ("HR", "NDCG", "MRR", "Recall", "Coverage") or not k.isdigit():
        raise ValueError(f"select_metric must look like NDCG@10 (HR, NDCG, MRR, Recall or "
                         f"Coverage at a cut-off), got {metric!r}")
    if int(k) in eval_cfg.ks:
        return eval_cfg
    return dataclasses.replace(eval_cfg, ks=sorted({*eval_cfg.ks, int(k)}))


def _optimizer(model: SequenceModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with three groups: dense weights (``weight_decay``), the item id tables
    (``emb_weight_decay``), and biases, norms and other embeddings (no decay)."""
    id_tables = {id(m.id_emb.weight) for m in model.modules()
                 if isinstance(m, ItemEncoder) and getattr(m, "id_emb", None) is not None}
    decay, ids, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in id_tables:
            ids.append(p)
        else:
            (no_decay if p.ndim < 2 or "emb" in name or "embed" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": ids, "weight_decay": cfg.emb_weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # the fused kernel updates every parameter in one pass (CPU and CUDA); the default loops over
    # parameters with a dozen small operations each
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The multiplier of ``cfg.lr`` at optimiser ``step`` (0-based)."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be constant or cosine, got {cfg.lr_schedule!r}")
    total = max(cfg.epochs * steps_per_epoch - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min((step - warm) / total, 1.0)))


def _fit_counts(model: SequenceModel, split: Split, eval_cfg: EvalConfig, device: torch.device,
                on_epoch: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    t0 = time.perf_counter()
    model.fit_counts(split)
    model.to(device)
    t1 = time.perf_counter()
    valid = evaluate(model, split, "valid", eval_cfg, device=device).metrics
    rec = {"epoch": 0, "loss": None, "train_seconds": t1 - t0,
           "eval_seconds": time.perf_counter() - t1, "valid": valid}
    if on_epoch:
        on_epoch(rec)
    return TrainResult(history=[rec], best_valid=valid, stop_reason="count-based model: fitted in one pass",
                       seconds=time.perf_counter() - t0)


def train(
    model: SequenceModel,
    split: Split,
    cfg: TrainConfig,
    eval_cfg: EvalConfig | None = None,
    *,
    workdir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    validate: Callable[[SequenceModel], dict[str, float]] | None = None,
    select: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Fit ``model`` on ``split``'s training ranges; select the epoch by validation ``select_metric``.

    Tasks other than next-item ranking pass their own ``validate`` (model -> metrics on the
    validation users) and the key to ``select`` (higher is better).

    The model ends holding the best epoch's weights. With ``workdir``, a checkpoint is written after
    every epoch; ``resume=True`` continues from it with the same random state, so a resumed run
    gives the same numbers as an uninterrupted one. ``stop_after`` ends training after that epoch
    while the learning-rate schedule still spans ``cfg.epochs`` (a refit retraces the selection
    run's schedule up to the selected epoch).
    """
    if validate is None:
        eval_cfg = selection_eval_config(eval_cfg or EvalConfig(), cfg.select_metric)
        validate = lambda m: evaluate(m, split, "valid", eval_cfg, device=device).metrics  # noqa: E731
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model.to(device)
    if not model.trainable:
        return _fit_counts(model, split, eval_cfg or EvalConfig(), device, on_epoch)

    t_start = time.perf_counter()
    result = TrainResult()
    metric = select or cfg.select_metric
    amp = autocast_dtype(cfg.precision, device)
    result.matmul_gflops = measure_matmul_rate(device, amp)
    if device.type == "cpu":  # each step's freed memory reused, not faulted in afresh
        result.heap = keep_freed_memory()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    maybe_compile(model, cfg.compile)
    seqs = split.seqs
    # what each batch row reads: windows of <= max_len + 1 training events
    win_start, win_end, win_score = training_windows(
        split.train_start, split.train_end, model.max_len, cfg.windows, cfg.window_stride)
    if len(win_start) == 0:
        raise ValueError("no user has two training events: nothing to learn from")
    lengths = win_end - win_start
    n_pairs = scored_pairs(win_start, win_end, win_score, model.max_len)
    use_time = model.uses_time and seqs.times is not None
    labels_tr = split.train_labels() if model.uses_labels else None
    loss_fn = make_loss(cfg.loss, n_items=seqs.n_items, negatives=cfg.negatives, sampler=cfg.sampler,
                        logq=cfg.logq, gbce_t=cfg.gbce_t, label_smoothing=cfg.label_smoothing,
                        mask_history=cfg.mask_history, repeat_bias=model.repeat_logit is not None,
                        item_counts=torch.from_numpy(split.train_item_counts()))
    if split.cold_items is not None and len(split.cold_items):
        # held-out items are unknown to training: never candidates, no id vector in fused encoders
        loss_fn = excluding(loss_fn, split.cold_items)
        for m in model.modules():
            if isinstance(m, ItemEncoder):
                m.forget_ids(split.cold_items)
    dim = model.item_table()[0].shape[1]

    items_tr, times_tr = split.train_arrays()

    def make_batch(bi: np.ndarray) -> tuple[torch.Tensor, ...]:
        start, end = win_start[bi], win_end[bi]
        x, y = train_pairs(items_tr, start, end, model.max_len, win_score[bi])
        t = train_times(times_tr, start, end, model.max_len) if use_time else None
        # binary tasks: the labels of the whole window [B, L+1] (inputs: [:, :-1], targets: [:, 1:])
        lab = None if labels_tr is None else left_pad(labels_tr, start, end, model.max_len + 1)
        tokens = int((x > 0).sum()) if model.skips_padding else x.size
        flops = encoder_flops(model, tokens, x.shape[1]) + loss_flops(
            cfg.loss, int((y > 0).sum()), seqs.n_items, dim, cfg.negatives)
        put = lambda a: None if a is None else torch.from_numpy(a).to(device, non_blocking=True)  # noqa: E731
        return put(x), put(y), put(t), put(lab), (flops, tokens)

    start_epoch, best_value, bad = 1, -math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    if resume and workdir is not None:
        st = load_checkpoint(workdir, rng)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        best_state = st["best_state"]
        start_epoch, best_value, bad = st["epoch"] + 1, st["best_value"], st["bad"]
        result.history = json.loads(st["history"])
        result.best_epoch = st["best_epoch"]
        result.best_valid = json.loads(st["best_valid"])
        log.info("resumed from epoch %d", st["epoch"])

    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    for epoch in range(start_epoch, last + 1):
        if bad >= cfg.patience:
            result.stop_reason = f"early stop: no better validation {metric} for {bad} evaluations"
            break
        model.train()
        t0 = time.perf_counter()
        total, steps, flops, tokens = 0.0, 0, 0.0, 0
        batches = list(length_bucketed_batches(lengths, cfg.batch_size, rng))
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}", unit="batch", disable=not progress,
                   leave=False)
        skipped, diverged = 0, False
        for x, y, t, lab, (f, n_tok) in prefetch(batches, make_batch):
            with autocast(device, amp):
                loss = model.loss(x, y, loss_fn, times=t, labels=lab)
            opt.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                # the norm is computed anyway; a NaN/inf gradient (finite loss) is skipped too
                norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                finite = bool(torch.isfinite(norm))
            if not finite:  # one bad batch must not turn every weight into NaN
                opt.zero_grad(set_to_none=True)
                skipped += 1
                log.warning("epoch %d: non-finite loss or gradient, batch skipped", epoch)
                if skipped > max(3, len(batches) // 20):
                    diverged = True
                    break
                continue
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, (epoch - 1) * len(batches) + steps, len(batches))
            opt.step()
            total += loss.item()
            steps += 1
            flops += f
            tokens += n_tok
            bar.update()
            if steps % 10 == 0:
                bar.set_postfix(loss=f"{total / steps:.4f}",
                                items_s=f"{n_pairs * steps / len(batches) / (time.perf_counter() - t0):,.0f}")
        bar.close()
        if diverged:
            advice = (f"the training loss or gradient was not finite in {skipped} batches of epoch "
                      f"{epoch}: lower the learning rate (train.lr = {cfg.lr})")
            if result.best_epoch == 0:  # nothing evaluated yet: no model worth keeping
                raise FloatingPointError(advice)
            result.stop_reason = f"diverged: {advice}; kept epoch {result.best_epoch}"
            log.error("%s", result.stop_reason)
            break
        train_s = time.perf_counter() - t0
        rec: dict[str, Any] = {
            "epoch": epoch, "loss": total / max(steps, 1), "train_seconds": train_s,
            "skipped_batches": skipped,
            "pairs_per_second": n_pairs / train_s, "flops": flops,
            "encoder_tokens": tokens,  # positions the encoder FLOPs count (padding too, if computed)
            "gflops_per_second": flops / train_s / 1e9,
            "floor_seconds": flops / (result.matmul_gflops * 1e9),
            "matmul_gflops": result.matmul_gflops,  # the ceiling the floor is measured against
        }
        repeat = model.seen_bias()  # what the model learned of repeats so far
        if repeat is not None:
            rec["repeat_score"] = repeat
        if epoch % cfg.eval_every == 0 or epoch == last:
            t1 = time.perf_counter()
            valid = validate(model)
            rec.update(eval_seconds=time.perf_counter() - t1, valid=valid)
            value = valid[metric]
            if value > best_value:
                best_value, bad = value, 0
                result.best_epoch, result.best_valid = epoch, valid
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        result.history.append(rec)
        if on_epoch:
            on_epoch(rec)
        log.debug("epoch %d loss %.4f %.1fs (%.1f GFLOP/s of %.0f) valid %s=%s", epoch, rec["loss"],
                  train_s, rec["gflops_per_second"], result.matmul_gflops, metric,
                  rec.get("valid", {}).get(metric))
        if workdir is not None:
            save_checkpoint(workdir, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "best_state": best_state, "best_value": best_value, "bad": bad,
                "best_epoch": result.best_epoch, "best_valid": json.dumps(result.best_valid),
                "history": json.dumps(result.history),
            }, rng)
        if cfg.max_minutes and time.perf_counter() - t_start > cfg.max_minutes * 60:
            result.stop_reason = f"time limit: {cfg.max_minutes} minutes"
            break
    else:
        result.stop_reason = result.stop_reason or f"epoch limit: {last}"
    if not result.stop_reason:
        result.stop_reason = f"early stop: no better validation {metric} for {bad} evaluations"
    # the ceiling read again after a long run: one taken while the machine was briefly busy (an
    # ML-1M run once read 92 GFLOP/s where the others read 177-185) would put every epoch nearer
    # its floor than it was
    if time.perf_counter() - t_start > REREAD_CEILING_AFTER_S:
        result.matmul_gflops = max(result.matmul_gflops, measure_matmul_rate(device, amp))
        for rec in result.history:
            if "flops" in rec:
                rec["floor_seconds"] = rec["flops"] / (result.matmul_gflops * 1e9)
                rec["matmul_gflops"] = result.matmul_gflops
    model.load_state_dict(best_state)
    release_buffers()
    result.seconds = time.perf_counter() - t_start
    return result
