"""The comparison's arithmetic and files for ``benchmarks/peer_recbole.py``: when seqrec's validation
first reaches RecBole's best (and the ratio of the two times), the Markdown table and notes for one
dataset's result, and ``peer_recbole_<dataset>.json`` / ``peer_recbole.md``. Pure: it reads result
dicts and writes files, and runs nothing."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from seqrec.fsutil import atomic_write_text

MODES = {"shipped": "RecBole (as shipped)", "no-anomaly": "RecBole (anomaly off)"}
"""RecBole's modes (``--modes``) and the name each has in the table."""


def reached(value: float, target: float) -> bool:
    """seqrec's validation NDCG@10 reaches RecBole's best. RecBole rounds its validation metrics to 4
    decimals, so seqrec's value is compared at that precision too."""
    return round(value, 4) >= target


def time_to(epochs: list[dict[str, Any]], target: float, key: str = "valid_unmasked"
            ) -> tuple[float | None, int | None]:
    """Wall seconds (and epoch) at which seqrec's validation NDCG@10 (``key``: unmasked or masked)
    first reaches ``target``."""
    for e in epochs:
        v = e.get(key, {}).get("NDCG@10")
        if v is not None and reached(v, target):
            return e["wall_s"], e["epoch"]
    return None, None


def crossing(target: float | None, recbole_s: float | None, recbole_epoch: int | None,
             seqrec: dict[str, Any] | None, scoring: str, recbole_test: float) -> dict[str, Any]:
    """Time-to-quality under one ``scoring`` (``unmasked`` or ``masked``): when seqrec's validation
    first reaches RecBole's best ``target``, the ratio of the two times, and whether the target is
    met (at most 1/10 of RecBole's time, and a higher test NDCG@10 than ``recbole_test``)."""
    row: dict[str, Any] = {"target_valid_ndcg10": target, "recbole_s": recbole_s,
                           "recbole_epoch": recbole_epoch}
    if seqrec is not None and target is not None:
        sq_t, sq_ep = time_to(seqrec["epochs"], target, f"valid_{scoring}")
        ratio = recbole_s / sq_t if sq_t and recbole_s else None
        higher = seqrec[f"test_{scoring}"]["NDCG@10"] > recbole_test
        row.update(seqrec_s=sq_t, seqrec_epoch=sq_ep, ratio=ratio, seqrec_test_higher=higher,
                   target_met=bool(ratio is not None and ratio >= 10 and higher))
    return row


def compare(recbole: dict[str, dict[str, Any]], seqrec: dict[str, Any] | None) -> dict[str, Any]:
    """Per RecBole mode: :func:`crossing` against its best unmasked validation (its own selection),
    and, where the driver scored it, against its best masked validation with the masked test of
    its selected checkpoint (under ``masked``)."""
    out: dict[str, Any] = {}
    for mode, r in recbole.items():
        row = crossing(r.get("best_valid_ndcg10"), r.get("best_wall_s"), r.get("first_best_epoch"),
                       seqrec, "unmasked", r["test"]["ndcg@10"])
        own = r.get("test_own", {}).get("masked", {})
        if seqrec is not None and r.get("best_valid_masked_ndcg10") is not None and own:
            row["masked"] = crossing(r["best_valid_masked_ndcg10"], r.get("best_masked_wall_s"),
                                     r.get("best_masked_epoch"), seqrec, "masked", own["ndcg@10"])
        out[mode] = row
    return out


def _f(v: float | None, fmt: str = ".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def markdown(result: dict[str, Any]) -> str:
    """The table and notes for one dataset's result."""
    ds, rec, sq, cmp_ = result["dataset"], result.get("recbole", {}), result.get("seqrec"), result.get("comparison", {})
    cols = ["system", "test NDCG@10", "test HR@10", "test NDCG@10 / HR@10 masked", "best valid NDCG@10",
            "best epoch / epochs", "s/epoch (median)", "s to RecBole's best valid NDCG@10",
            "RecBole ÷ seqrec time", "total wall s", "stopped by"]
    lines = [f"### {ds}", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for mode, r in rec.items():
        own = r.get("test_own", {}).get("masked", {})
        c = cmp_.get(mode, {})
        lines.append("| " + " | ".join([
            MODES[mode], _f(r["test"].get("ndcg@10")), _f(r["test"].get("hit@10")),
            f"{_f(own.get('ndcg@10'))} / {_f(own.get('hit@10'))}", _f(r.get("best_valid_ndcg10")),
            f"{r.get('best_epoch')} / {r.get('epochs_run')}",
            _f(_median([e["train_s"] for e in r["epochs"]]), ".1f"),
            f"{_f(r.get('best_wall_s'), '.1f')} (epoch {r.get('first_best_epoch')})",
            "not reached" if sq is not None and c.get("seqrec_s") is None else
            (f"{c['ratio']:.1f}x" if c.get("ratio") else "n/a"),
            _f(r.get("total_wall_s"), ".0f"), r.get("stop_reason", "")]) + " |")
    if sq is not None:
        tt = []
        for mode in rec:
            c = cmp_.get(mode, {})
            when = "not reached" if c.get("seqrec_s") is None else f"{c['seqrec_s']:.1f} (epoch {c['seqrec_epoch']})"
            tt.append(f"{MODES[mode].split('(')[1].rstrip(')')}: {when}")
        lines.append("| " + " | ".join([
            f"seqrec ({sq['config']['model'].get('name', 'sasrec')})",
            _f(sq["test_unmasked"]["NDCG@10"]), _f(sq["test_unmasked"]["HR@10"]),
            f"{_f(sq['test_masked']['NDCG@10'])} / {_f(sq['test_masked']['HR@10'])}",
            _f(sq.get("best_valid_ndcg10")), f"{sq['best_epoch']} / {sq['epochs_run']}",
            _f(_median([e["train_s"] for e in sq["epochs"] if e.get("train_s") is not None]), ".1f"),
            "; ".join(tt) or "n/a", "", _f(sq["total_wall_s"], ".0f"), sq["stop_reason"]]) + " |")
    lines += ["", *notes(result)]
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    """What a reader of the table must know, all from the measured result."""
    rec, sq, cmp_, sp = result.get("recbole", {}), result.get("seqrec"), result.get("comparison", {}), \
        result.get("split_check", {})
    out = []
    if sp:
        v = sp["valid"]
        out.append(f"- Split: seqrec's leave-one-out, written for RecBole with each event's position as "
                   f"its timestamp; {sp['n_users']['seqrec']:,} users, {sp['n_items']['seqrec']:,} items, "
                   f"{v['users_seqrec']:,} users evaluated, {sp['n_train_sequences']['seqrec']:,} training "
                   f"(context, next item) pairs; RecBole's split is "
                   f"{'identical, target by target' if sp['identical'] else 'DIFFERENT (see JSON split_check)'}.")
    masked_sel = bool(sq and sq["config"]["eval"].get("mask_seen"))
    out.append("- Test NDCG@10 / HR@10: RecBole's protocol, full ranking, items already in the history "
               "NOT masked (RecBole does not mask them for sequential models); seqrec selected its epoch on "
               + ("its own masked validation NDCG@10 (`--seqrec-select masked`)" if masked_sel else
                  "the same unmasked validation NDCG@10")
               + ". The masked column (seqrec's default: history items "
               "removed, a target in the history is a miss) is seqrec's evaluator for seqrec and our own "
               "recomputation from the same checkpoint's scores for RecBole.")
    for mode, r in rec.items():
        own = r.get("test_own", {}).get("unmasked", {})
        if own:
            out.append(f"- {MODES[mode]}: our unmasked recomputation of its test NDCG@10 gives "
                       f"{own['ndcg@10']:.4f} (RecBole's own: {r['test']['ndcg@10']:.4f}); anomaly "
                       f"detection during training: {'on' if r['anomaly_detection']['during_training'] else 'off'}; "
                       f"{r['torch_threads']} torch threads.")
        if r.get("stopped_by_wall_cap"):
            out.append(f"- {MODES[mode]} was stopped by the {r['max_minutes']:g}-minute wall-time cap after "
                       f"epoch {r['epochs_run']} (of up to {r['settings']['epochs']}; early stop "
                       f"{r['settings']['stopping_step']}); its best checkpoint so far (epoch {r['best_epoch']}) "
                       "was tested, as RecBole does after early stopping: its numbers are lower bounds of "
                       "converged RecBole and its best validation NDCG@10 is the target seqrec had to reach.")
    if rec and sq is not None:
        r0 = next(iter(rec.values()))
        per_epoch = result.get("split_check", {}).get("seqrec_train_positions_per_epoch")
        length = sq["config"]["model"].get("max_len")
        stride = sq["config"]["train"].get("window_stride") or 0
        cut = (f"windows of {length} events" if not stride or stride >= length else
               f"windows of {length} events starting every {stride} events (each target with at "
               f"least {length - stride} events of context when the history has them)")
        out.append(f"- Per-epoch work differs, so s/epoch is not comparable: RecBole trains "
                   f"{r0['n_train_sequences']:,} prefix samples per epoch, each re-encoded and scored at "
                   f"its last position; seqrec cuts each user's training sequence into {cut}, "
                   f"encodes each window once and scores its positions not scored by an earlier "
                   f"window ({per_epoch if per_epoch is None else f'{per_epoch:,}'} "
                   "scored positions per epoch, each target once, with the events before it in its "
                   "window as context). The fair figure is wall "
                   "time to a validation NDCG@10, counted from model construction to the end of the "
                   "validation pass that first reaches it (data preparation excluded on both sides; "
                   "seqrec's extra validation passes in the protocol it does not select on excluded too).")
        out.append("- Total wall s: model construction to the end of the test pass, on each side.")
        out.append("- seqrec reaches RecBole's best when its validation NDCG@10, rounded to 4 decimals as "
                   "RecBole rounds its own, is at least as high.")
        for mode, c in cmp_.items():
            if "target_met" in c:
                out.append(f"- Target vs {MODES[mode]} (seqrec reaches its best validation NDCG@10 in at most "
                           f"1/10 of its wall time and ends with a higher test NDCG@10): "
                           f"{'MET' if c['target_met'] else 'NOT MET'} (time ratio "
                           f"{'not reached' if c.get('ratio') is None else format(c['ratio'], '.1f') + 'x'}, "
                           f"seqrec test NDCG@10 higher: {'yes' if c['seqrec_test_higher'] else 'no'}).")
            if "masked" in c:
                m = c["masked"]
                when = ("not reached" if m["seqrec_s"] is None
                        else f"at {m['seqrec_s']:.1f} s (epoch {m['seqrec_epoch']})")
                out.append(f"- The same with history items masked on both sides vs {MODES[mode]}: its best "
                           f"masked validation NDCG@10 {m['target_valid_ndcg10']:.4f} at "
                           f"{_f(m['recbole_s'], '.1f')} s (epoch {m['recbole_epoch']}; our "
                           f"recomputation each epoch, its seconds off the clock); seqrec {when}; "
                           f"{'MET' if m['target_met'] else 'NOT MET'} (time ratio "
                           f"{'not reached' if m['ratio'] is None else format(m['ratio'], '.1f') + 'x'}, "
                           f"seqrec masked test NDCG@10 higher than RecBole's selected checkpoint's: "
                           f"{'yes' if m['seqrec_test_higher'] else 'no'}).")
    if sq is not None:
        name = sq["config"]["model"].get("name", "sasrec")
        if name != "sasrec":
            out.append(f"- seqrec's model here is its {name}, not SASRec: this compares the "
                       "model seqrec would pick for the task with RecBole's SASRec."
                       + (" HSTU also reads the gaps between events' timestamps where the data has "
                          "them (ML-100K does); RecBole's SASRec uses only their order."
                          if name == "hstu" else ""))
        tr = sq["config"]["train"]
        keys = ("batch_size", "lr", "lr_schedule", "epochs", "patience", "max_minutes", "loss",
                "window_stride", "mask_history", "emb_weight_decay", "precision", "eval_every", "seed")
        out.append(f"- seqrec settings: model {json.dumps(sq['config']['model'])}, train "
                   f"{json.dumps({k: tr[k] for k in keys if k in tr})}.")
        if sq["config"]["model"].get("repeat_bias"):
            learned = [e["repeat_score"] for e in sq.get("epochs", []) if "repeat_score" in e]
            out.append("- seqrec's model learns one score added to every item the user has already "
                       "had (`model.repeat_bias`), in training and in every unmasked ranking"
                       + (f"; it learned {learned[-1]:+.2f} by its last epoch" if learned else "")
                       + ". RecBole's SASRec has no such term: unmasked, it ranks seen items by "
                       "their plain scores.")
        if tr.get("eval_every", 1) > 1:
            out.append(f"- seqrec validates every {tr['eval_every']} epochs and after the last "
                       "(RecBole after every epoch, as shipped): less validation time, and a "
                       "crossing of RecBole's best is seen only at a validated epoch (up to "
                       f"{tr['eval_every'] - 1} epoch(s) late), never early.")
    m = result.get("machine", {})
    if m:
        out.append(f"- Machine: {m.get('cpus')} CPUs, {m.get('platform')}, load average at start "
                   f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')} (other processes slow both sides).")
    return out


def save(result: dict[str, Any], results_dir: Path) -> None:
    """Write this dataset's JSON, then the Markdown file from every dataset's JSON present."""
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_text(results_dir / f"peer_recbole_{result['dataset']}.json",
                      json.dumps(result, indent=1, default=str))
    write_markdown(results_dir)


def write_markdown(results_dir: Path) -> None:
    """``peer_recbole.md`` from every dataset's JSON in ``results_dir``."""
    parts = ["# RecBole 1.2.1's SASRec vs seqrec, same split, same machine", "",
             "Written by `benchmarks/peer_recbole.py`; every number below is measured by it.", ""]
    for f in sorted(results_dir.glob("peer_recbole_*.json")):
        parts += [markdown(json.loads(f.read_text())), ""]
    atomic_write_text(results_dir / "peer_recbole.md", "\n".join(parts))
