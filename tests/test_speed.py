"""Speed machinery: prefetching keeps order, precision choice, FLOP accounting, torch.compile."""

import math

import pytest
import torch

from seqrec.config import EvalConfig, TrainConfig
from seqrec.data.preprocess import sequences_from_lists
from seqrec.data.split import leave_one_out
from seqrec.models import build_model
from seqrec.train import speed
from seqrec.train.loop import train
from seqrec.train.speed import (autocast_dtype, dense_params, encoder_flops, loss_flops,
                                measure_matmul_rate, prefetch)

from conftest import cyclic_histories


def test_prefetch_keeps_order_and_raises():
    assert list(prefetch(range(50), lambda i: i * i)) == [i * i for i in range(50)]

    def boom(i):
        if i == 3:
            raise RuntimeError("bad batch")
        return i

    got = []
    with pytest.raises(RuntimeError, match="bad batch"):
        for v in prefetch(range(10), boom):
            got.append(v)
    assert got == [0, 1, 2]
    it = prefetch(range(1000), lambda i: i)
    assert next(it) == 0
    it.close()  # an abandoned iterator stops its thread


def test_precision_choice():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None  # no native bf16 matmuls assumed on CPU
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp32", cpu) is None
    with pytest.raises(ValueError):
        autocast_dtype("fp8", cpu)


def test_flop_accounting():
    m = build_model({"name": "sasrec", "d_model": 64, "n_blocks": 2, "d_ff": 256}, 100, 0)
    per_block = 3 * 64 * 64 + 3 * 64 + 64 * 64 + 64 + 2 * 64 * 256 + 256 + 64 + 4 * 64
    assert dense_params(m) == 2 * per_block + 2 * 64
    assert encoder_flops(m, tokens=10, width=5) == 10 * (6 * dense_params(m) + 12 * 5 * 64 * 2)
    assert loss_flops("softmax", 7, 100, 64, 5) == 6 * 7 * 100 * 64
    assert loss_flops("sampled", 7, 100, 64, 5) == 6 * 7 * 6 * 64
    assert measure_matmul_rate(torch.device("cpu"), n=256) > 0.1


@pytest.mark.parametrize("gflops, size", [(1.0, (256, 448)), (200.0, (256, 2048))])
def test_matmul_rate_shrinks_the_product_on_a_slow_unit(monkeypatch, gflops, size):
    """At 1 GFLOP/s (bf16 on a CPU without bf16 units) four 2,048 products would take 69 s: the
    probe sees that and times about a quarter-second product instead; a fast unit keeps 2,048."""
    sizes = []

    def product_seconds(n, device, dtype, repeats=4):
        sizes.append(n)
        return 2 * n**3 / (gflops * 1e9)

    monkeypatch.setattr(speed, "_best_product_seconds", product_seconds)
    assert measure_matmul_rate(torch.device("cpu")) == pytest.approx(gflops)
    assert tuple(sizes) == size


def test_history_reports_flops_and_rate():
    split = leave_one_out(sequences_from_lists(cyclic_histories(n_users=60)))
    model = build_model({"name": "sasrec", "d_model": 16}, split.seqs.n_items, 0)
    res = train(model, split, TrainConfig(epochs=1, device="cpu"), EvalConfig(ks=[10]), progress=False)
    rec = res.history[0]
    assert rec["flops"] > 0 and rec["gflops_per_second"] > 0 and res.matmul_gflops > 0
    assert rec["floor_seconds"] == pytest.approx(rec["flops"] / (res.matmul_gflops * 1e9))


def test_floor_uses_the_higher_ceiling_reading(monkeypatch):
    """The matmul rate is read before and after a long training run; the higher reading is the
    ceiling of every epoch's floor (a low first reading, taken while the machine was busy, once made an
    ML-1M run look twice as near its floor as it was)."""
    import seqrec.train.loop as loop

    monkeypatch.setattr(loop, "REREAD_CEILING_AFTER_S", 0.0)  # short runs read it once
    split = leave_one_out(sequences_from_lists(cyclic_histories(n_users=40)))
    for readings, ceiling in (([100.0, 250.0], 250.0), ([250.0, 100.0], 250.0)):
        it = iter(readings)
        monkeypatch.setattr(loop, "measure_matmul_rate", lambda device, dtype=None: next(it))
        model = build_model({"name": "sasrec", "d_model": 16}, split.seqs.n_items, 0)
        res = train(model, split, TrainConfig(epochs=2, device="cpu"), EvalConfig(ks=[10]),
                    progress=False)
        assert res.matmul_gflops == ceiling
        for rec in res.history:
            assert rec["floor_seconds"] == pytest.approx(rec["flops"] / (ceiling * 1e9))


def test_compiled_training_matches_eager():
    split = leave_one_out(sequences_from_lists(cyclic_histories(n_users=40)))
    losses = []
    for compile_ in (False, True):
        model = build_model({"name": "sasrec", "d_model": 16, "dropout": 0.0}, split.seqs.n_items, 0)
        res = train(model, split, TrainConfig(epochs=1, device="cpu", compile=compile_),
                    EvalConfig(ks=[10]), progress=False)
        losses.append(res.history[0]["loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_packed_rnn_flops_count_real_items_only():
    """A packed LSTM computes nothing at padding: its FLOPs are those of the real items, however
    wide the batch is padded (a SASRec's count includes the padding it does compute)."""
    histories = [list(range(1, 4 + (u % 9))) for u in range(40)]  # lengths 3..11: padded batches
    split = leave_one_out(sequences_from_lists(histories))
    n = split.seqs.n_items
    model = build_model({"name": "lstm", "embed_dim": 16, "hidden_dim": 16}, n, 0)
    res = train(model, split, TrainConfig(epochs=1, batch_size=7, device="cpu"), EvalConfig(ks=[10]),
                progress=False)
    pairs = int((split.train_end - split.train_start - 1).clip(min=0).sum())  # each scored once
    expected = encoder_flops(model, pairs, 0) + loss_flops("softmax", pairs, n, 16, 0)
    assert res.history[0]["encoder_tokens"] == pairs
    assert res.history[0]["flops"] == pytest.approx(expected)


@pytest.mark.parametrize("loss", ["softmax", "sampled", "bce", "gbce"])
def test_bf16_training_runs_and_learns(loss):
    """``precision = bf16`` trains every loss of the menu (on CPU here, as on CUDA) to a loss close
    to float32's after two epochs."""
    split = leave_one_out(sequences_from_lists(cyclic_histories(n_users=60)))
    losses = []
    for precision in ("fp32", "bf16"):
        model = build_model({"name": "sasrec", "d_model": 16, "dropout": 0.0}, split.seqs.n_items, 0)
        res = train(model, split, TrainConfig(epochs=2, device="cpu", precision=precision, loss=loss,
                                              negatives=16), EvalConfig(ks=[10]), progress=False)
        losses.append([r["loss"] for r in res.history])
    assert all(math.isfinite(v) for v in losses[1])
    assert losses[1][-1] < losses[1][0]  # it learns
    assert losses[1][-1] == pytest.approx(losses[0][-1], rel=0.1)


def test_processor_name_reads_the_kernels_model_name(monkeypatch, tmp_path):
    """Benchmarks record the CPU's model name beside its measured ceiling; without /proc/cpuinfo
    the architecture stands in."""
    assert speed.processor_name()
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000 @ 3.0GHz\nflags\t: avx2\n")
    real_path = speed.Path
    monkeypatch.setattr(speed, "Path", lambda p: real_path(info) if p == "/proc/cpuinfo" else real_path(p))
    assert speed.processor_name() == "Test CPU 9000 @ 3.0GHz"
    monkeypatch.setattr(speed, "Path", lambda p: real_path(tmp_path / "missing"))
    assert speed.processor_name() in {speed.platform.processor(), speed.platform.machine()}


def test_device_name_names_the_card_on_cuda_and_the_processor_elsewhere(monkeypatch):
    """metrics.json records what the ceiling was measured on: a GPU run names the card."""
    assert speed.device_name(torch.device("cpu")) == speed.processor_name()
    monkeypatch.setattr(speed.torch.cuda, "get_device_name", lambda device=None: "Test GPU 80GB")
    assert speed.device_name(torch.device("cuda")) == "Test GPU 80GB"


def test_matmul_rate_times_large_products_on_cuda(monkeypatch):
    """A 2,048 product on a GPU times its launch more than its rate: CUDA devices time 8,192
    unless told otherwise (the sizes the timer is asked for, recorded without a GPU)."""
    asked = []

    def fake(n, device, dtype, repeats=4):
        asked.append(n)
        return 2 * n**3 / 1e14  # a 100 TFLOP/s device
    monkeypatch.setattr(speed, "_best_product_seconds", fake)
    rate = speed.measure_matmul_rate(torch.device("cuda"))
    assert asked == [256, 8192] and rate == pytest.approx(1e5)
    asked.clear()
    speed.measure_matmul_rate(torch.device("cpu"))
    assert asked == [256, 2048]
