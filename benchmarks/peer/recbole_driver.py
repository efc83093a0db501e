"""Train and test RecBole 1.2.1's SASRec on one dataset, timing every epoch (runs in RecBole's venv).

Started by ``benchmarks/peer_recbole.py`` with the RecBole virtualenv's interpreter, in a working
folder of its own (RecBole writes ``log/``, ``log_tensorboard/`` and ``saved/`` into the current
folder). It never imports seqrec. It writes two JSON files:

- ``--out``: per epoch the training seconds, the validation pass seconds, validation metrics (RecBole's,
  and our own unmasked and masked recomputation from the same scores) and the wall-clock seconds
  since the start of training (model construction) at the end of that epoch's validation, our
  recomputation's seconds taken off; the best validation NDCG@10 and its epoch, unmasked (RecBole's
  selection) and masked; test metrics of the best checkpoint as RecBole computes them, plus our own
  unmasked and masked recomputation from the same scores;
- ``--split-out``: every validation and test user's target item and input length (external ids),
  so the caller can check that RecBole's split is exactly the one it meant.

Modes: ``shipped`` leaves autograd anomaly detection as importing RecBole's sequential models
leaves it (switched on, by ``sine.py``); ``no-anomaly`` switches it off after that import.
``--max-minutes`` stops training at the end of the first epoch whose validation ends after the
cap; the best checkpoint so far is then tested, as RecBole does after early stopping.
"""

from __future__ import annotations

import os

# torch >= 2.6 loads weights only by default, and RecBole's checkpoints hold its Config object:
# without this its own reload of the best model fails. Must be set before torch is imported.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODEL = "SASRec"
K = 10


class StopTraining(Exception):
    """Raised from RecBole's per-epoch callback once the wall-time cap has passed."""


def say(msg: str) -> None:
    """A progress line for the parent process (which echoes lines starting with ``[driver]``)."""
    print(f"[driver] {msg}", flush=True)


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-path", type=Path, required=True,
                    help="folder holding <dataset>/<dataset>.inter")
    ap.add_argument("--dataset", required=True, help="RecBole dataset name (not 'ml-100k')")
    ap.add_argument("--config", type=Path, required=True, help="RecBole YAML (model + protocol)")
    ap.add_argument("--mode", choices=["shipped", "no-anomaly"], default="shipped")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop at the end of the first epoch that ends past this (0 = no cap)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a RecBole setting (value parsed as JSON when possible)")
    ap.add_argument("--out", type=Path, required=True, help="result JSON")
    ap.add_argument("--split-out", type=Path, required=True, help="split dump JSON")
    ap.add_argument("--split-only", action="store_true",
                    help="build RecBole's dataset and split, dump it, and stop (no training)")
    args = ap.parse_args(argv)
    if args.dataset == "ml-100k":
        ap.error("RecBole 1.2.1 reads its bundled ml-100k for that name; use another name")
    return args


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON via a temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def set_anomaly_mode(mode: str) -> dict[str, bool]:
    """Import RecBole's sequential models (which switch anomaly detection on), then apply ``mode``."""
    before = torch.is_anomaly_enabled()
    import recbole.model.sequential_recommender  # noqa: F401  (its sine.py turns anomaly mode on)

    after_import = torch.is_anomaly_enabled()
    if mode == "no-anomaly":
        torch.autograd.set_detect_anomaly(False)
    return {"before_import": before, "after_recbole_import": after_import,
            "during_training": torch.is_anomaly_enabled()}


def build_config(args: argparse.Namespace, workdir: Path) -> Any:
    """RecBole's Config from the YAML, with the data path, checkpoint folder and ``--set`` values."""
    from recbole.config import Config

    extra: dict[str, Any] = {"data_path": str(args.data_path.resolve()),
                             "checkpoint_dir": str(workdir / "saved")}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = parse_value(value.strip())
    return Config(model=MODEL, dataset=args.dataset, config_file_list=[str(args.config)],
                  config_dict=extra)


def quiet_console() -> None:
    """Keep RecBole's INFO log in its file but only warnings on the console."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(logging.WARNING)


def eval_rows(loader: Any) -> Any:
    """The evaluation data set's rows: one per evaluated user (target, input list and length)."""
    return loader._dataset.inter_feat


def split_dump(dataset: Any, train_data: Any, valid_data: Any, test_data: Any) -> dict[str, Any]:
    """Targets and input lengths of every evaluated user, in external ids, plus the counts."""
    uid, iid = dataset.uid_field, dataset.iid_field
    len_field = dataset.item_list_length_field
    out: dict[str, Any] = {
        "n_users": int(dataset.user_num - 1),  # RecBole counts the padding id
        "n_items": int(dataset.item_num - 1),
        "n_train_sequences": len(train_data._dataset),
    }
    for name, loader in (("valid", valid_data), ("test", test_data)):
        rows = eval_rows(loader)
        users = dataset.id2token(uid, rows[uid].numpy())
        targets = dataset.id2token(iid, rows[iid].numpy())
        lengths = rows[len_field].numpy()
        out[name] = {str(u): [str(t), int(n)] for u, t, n in zip(users, targets, lengths)}
    return out


def read_histories(inter_file: Path, dataset: Any) -> dict[int, np.ndarray]:
    """Every user's whole time-ordered sequence as RecBole item ids, from our own ``.inter`` file."""
    users: list[str] = []
    items: list[str] = []
    pos: list[float] = []
    with open(inter_file, encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            u, i, t = line.rstrip("\n").split("\t")
            users.append(u)
            items.append(i)
            pos.append(float(t))
    uids = dataset.token2id(dataset.uid_field, users)
    iids = dataset.token2id(dataset.iid_field, items)
    order = np.lexsort((np.asarray(pos), uids))
    uids, iids = uids[order], iids[order]
    cuts = np.flatnonzero(np.diff(uids)) + 1
    return {int(g[0]): s for g, s in zip(np.split(uids, cuts), np.split(iids, cuts))}


@torch.no_grad()
def own_metrics(model: Any, loader: Any, dataset: Any, histories: dict[int, np.ndarray],
                drop_last: int, batch: int = 1024) -> dict[str, dict[str, float]]:
    """HR/NDCG/MRR@10 from the model's full-ranking scores, unmasked (RecBole's protocol) and masked.

    Masked: every item of the user's input history (all events before the target, ``drop_last``
    dropped from the end of the whole sequence) is removed from the ranking and a target that is
    itself in the history counts as a miss (seqrec's rule). Equal scores: lower item id first.
    """
    model.eval()
    rows = eval_rows(loader)
    uid, iid = dataset.uid_field, dataset.iid_field
    acc = {"unmasked": [], "masked": []}
    for s in range(0, len(rows), batch):
        inter = rows[s:s + batch]
        scores = model.full_sort_predict(inter).view(len(inter), -1).clone()
        scores[:, 0] = -math.inf
        targets = inter[iid].long()
        for variant in ("unmasked", "masked"):
            sc = scores
            hit_hist = torch.zeros(len(inter), dtype=torch.bool)
            if variant == "masked":
                sc = scores.clone()
                for r, u in enumerate(inter[uid].tolist()):
                    hist = torch.from_numpy(histories[u][:-drop_last])
                    sc[r, hist] = -math.inf
                    hit_hist[r] = bool((hist == targets[r]).any())
            t = sc.gather(1, targets[:, None])
            ids = torch.arange(sc.shape[1])[None, :]
            rank = (sc > t).sum(1) + ((sc == t) & (ids < targets[:, None])).sum(1)
            rank = torch.where(hit_hist, torch.full_like(rank, 10**9), rank)
            acc[variant].append(rank)
    out = {}
    for variant, parts in acc.items():
        rank = torch.cat(parts).double()
        top = rank < K
        out[variant] = {
            f"hit@{K}": float(top.double().mean()),
            f"ndcg@{K}": float(torch.where(top, 1.0 / torch.log2(rank + 2), 0.0).mean()),
            f"mrr@{K}": float(torch.where(top, 1.0 / (rank + 1), 0.0).mean()),
            "users": int(len(rank)),
        }
    return out


class EpochRecorder:
    """Wraps a RecBole trainer's epoch methods to time them; its ``callback`` applies the cap.

    With ``masked`` (a function of the model giving :func:`own_metrics` on the validation users),
    each validation is also scored with history items masked; that pass is ours, not RecBole's
    work, so its seconds are taken off the wall clock (and off the cap)."""

    def __init__(self, trainer: Any, t0: float, max_minutes: float,
                 masked: Callable[[Any], dict[str, dict[str, float]]] | None = None) -> None:
        self.t0 = t0
        self.max_s = max_minutes * 60.0
        self.last_epoch = int(trainer.epochs)
        self.epochs: list[dict[str, Any]] = []
        self.stopped_by_cap = False
        self.masked = masked
        self.model = trainer.model
        self.excluded = 0.0  # seconds of our own masked validation passes
        self._train = trainer._train_epoch
        self._valid = trainer._valid_epoch
        trainer._train_epoch = self.train_epoch
        trainer._valid_epoch = self.valid_epoch

    def train_epoch(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        loss = self._train(*args, **kwargs)
        total = float(sum(loss)) if isinstance(loss, tuple) else float(loss)
        self.epochs.append({"epoch": len(self.epochs) + 1, "loss": total,
                            "train_s": time.perf_counter() - t})
        say(f"epoch {len(self.epochs)} trained in {self.epochs[-1]['train_s']:.1f} s, loss {total:.4f}")
        return loss

    def valid_epoch(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        score, result = self._valid(*args, **kwargs)
        now = time.perf_counter()
        rec = self.epochs[-1]
        rec.update(valid_s=now - t, wall_s=now - self.t0 - self.excluded,
                   valid={k: float(v) for k, v in result.items()})
        line = (f"epoch {rec['epoch']} valid NDCG@10 {rec['valid'].get('ndcg@10', float('nan')):.4f} "
                f"HR@10 {rec['valid'].get('hit@10', float('nan')):.4f}")
        if self.masked is not None:
            own = self.masked(self.model)
            self.model.train()
            rec["valid_own"] = own
            self.excluded += time.perf_counter() - now
            line += f" (masked {own['masked'][f'ndcg@{K}']:.4f})"
        say(f"{line} at {rec['wall_s']:.1f} s")
        return score, result

    def callback(self, epoch_idx: int, valid_score: float) -> None:
        """Called by RecBole after each validation (and after saving a new best checkpoint).
        On the last epoch the loop ends anyway: that is the epoch limit, not the cap."""
        if epoch_idx + 1 >= self.last_epoch:
            return
        if self.max_s > 0 and time.perf_counter() - self.t0 - self.excluded > self.max_s:
            self.stopped_by_cap = True
            raise StopTraining


def recbole_ndcg(e: dict[str, Any]) -> float | None:
    """RecBole's own validation NDCG@10 of an epoch (already rounded by RecBole), if scored."""
    return e["valid"]["ndcg@10"] if "valid" in e else None


def masked_ndcg(e: dict[str, Any]) -> float | None:
    """Our masked recomputation of an epoch's validation NDCG@10, rounded to 4 decimals as RecBole
    rounds its own, if scored."""
    return round(e["valid_own"]["masked"][f"ndcg@{K}"], 4) if "valid_own" in e else None


def best_epochs(epochs: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None] = recbole_ndcg
                ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first and the last epoch with the highest ``value`` (validation NDCG@10), among the
    epochs that have one; None when none has.

    RecBole rounds validation metrics (4 decimals by default) and keeps a checkpoint whenever the
    score is >= the best so far, so the *last* of equal bests is the one it tests; the *first* is
    when that quality was first reached.
    """
    scored = [e for e in epochs if value(e) is not None]
    if not scored:
        return None
    best = max(value(e) for e in scored)
    tied = [e for e in scored if value(e) == best]
    return tied[0], tied[-1]


def train_and_test(config: Any, dataset: Any, loaders: tuple[Any, Any, Any], args: argparse.Namespace,
                   on_ready: Callable[[], None], histories: dict[int, np.ndarray]) -> dict[str, Any]:
    """Build SASRec, fit it with RecBole's trainer under the cap, test the best checkpoint."""
    from recbole.utils import get_model, get_trainer, init_seed

    train_data, valid_data, test_data = loaders
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    on_ready()
    t0 = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    rec = EpochRecorder(trainer, t0, args.max_minutes,
                        lambda m: own_metrics(m, valid_data, dataset, histories, drop_last=2))
    say(f"training {MODEL} ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"anomaly detection {'on' if torch.is_anomaly_enabled() else 'off'}, "
        f"cap {args.max_minutes:g} min")
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=rec.callback)
    except StopTraining:
        say(f"wall-time cap of {args.max_minutes:g} min passed after epoch {len(rec.epochs)}: "
            "testing the best checkpoint so far")
    fit_s = time.perf_counter() - t0
    t = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    test_s = time.perf_counter() - t
    found = best_epochs(rec.epochs)
    first, best = found if found else (None, None)
    bm = (best_epochs(rec.epochs, masked_ndcg) or (None, None))[0]
    epochs_cfg = int(config["epochs"])
    if rec.stopped_by_cap:
        stop = f"wall-time cap: {args.max_minutes:g} min (then the best checkpoint was tested)"
    elif len(rec.epochs) < epochs_cfg:
        stop = f"RecBole early stop: no better validation NDCG@10 for {config['stopping_step']} epochs"
    else:
        stop = f"epoch limit: {epochs_cfg}"
    return {
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "epochs": rec.epochs,
        "epochs_run": len(rec.epochs),
        "best_epoch": best["epoch"] if best else None,
        "best_valid_ndcg10": best["valid"]["ndcg@10"] if best else None,
        "best_valid": best["valid"] if best else None,
        "first_best_epoch": first["epoch"] if first else None,
        "best_wall_s": first["wall_s"] if first else None,
        # the same with history items masked (our recomputation; RecBole selects unmasked)
        "best_valid_masked_ndcg10": masked_ndcg(bm) if bm else None,
        "best_masked_epoch": bm["epoch"] if bm else None,
        "best_masked_wall_s": bm["wall_s"] if bm else None,
        "own_valid_s_excluded": rec.excluded,
        "recbole_best_valid_score": float(trainer.best_valid_score),
        "stopped_by_wall_cap": rec.stopped_by_cap,
        "stop_reason": stop,
        "fit_wall_s": fit_s,
        "test": {k: float(v) for k, v in test.items()},
        "test_s": test_s,
        "total_wall_s": fit_s + test_s,
        "trainer": trainer,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    workdir = Path.cwd()
    anomaly = set_anomaly_mode(args.mode)
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    config = build_config(args, workdir)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    quiet_console()
    t = time.perf_counter()
    dataset = create_dataset(config)
    loaders = data_preparation(config, dataset)
    data_s = time.perf_counter() - t
    dump = split_dump(dataset, *loaders)
    write_json(args.split_out, dump)
    say(f"data: {dump['n_users']:,} users, {dump['n_items']:,} items, "
        f"{dump['n_train_sequences']:,} training sequences, {len(dump['valid']):,} validation and "
        f"{len(dump['test']):,} test users ({data_s:.1f} s)")
    result: dict[str, Any] = {
        "model": MODEL, "dataset": args.dataset, "mode": args.mode, "config_file": str(args.config),
        "overrides": args.set, "max_minutes": args.max_minutes,
        "settings": {k: config[k] for k in ("loss_type", "n_layers", "n_heads", "hidden_size",
                                            "inner_size", "hidden_dropout_prob", "attn_dropout_prob",
                                            "MAX_ITEM_LIST_LENGTH", "learning_rate", "learner",
                                            "train_batch_size", "epochs", "stopping_step", "seed",
                                            "valid_metric", "eval_args")},
        "n_users": dump["n_users"], "n_items": dump["n_items"],
        "n_train_sequences": dump["n_train_sequences"], "data_prep_s": data_s,
        "anomaly_detection": anomaly,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "recbole": _recbole_version()},
        "torch_threads": torch.get_num_threads(),
        "env_TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"),
    }
    if args.split_only:
        result["split_only"] = True
        write_json(args.out, result)
        return 0

    def check_mode() -> None:
        anomaly["during_training"] = torch.is_anomaly_enabled()

    inter_file = args.data_path / args.dataset / f"{args.dataset}.inter"
    histories = read_histories(inter_file, dataset)
    out = train_and_test(config, dataset, loaders, args, check_mode, histories)
    trainer = out.pop("trainer")
    t = time.perf_counter()
    out["test_own"] = own_metrics(trainer.model, loaders[2], dataset, histories, drop_last=1)
    out["test_own_s"] = time.perf_counter() - t
    result.update(out)
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["total_wall_s_in_process"] = time.perf_counter() - t_start
    write_json(args.out, result)
    say(f"test NDCG@10 {result['test'].get('ndcg@10', float('nan')):.4f} "
        f"HR@10 {result['test'].get('hit@10', float('nan')):.4f} (best epoch {result['best_epoch']}, "
        f"{result['epochs_run']} run)")
    return 0


def _recbole_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("recbole")


if __name__ == "__main__":
    sys.exit(main())
