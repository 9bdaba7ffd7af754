"""`bptt bench`: the contenders compute the same gradients; the command prints its table and
writes JSON; the memory probe reports. No timings are asserted."""

import json

import pytest

from bptt.bench import Case, all_cases, markdown, run_bench
from bptt.bench.contenders import case_params, make_bptt, make_torch
from bptt.bench.harness import max_rel_error, peak_memory, steps_per_timing, time_alternated
from bptt.cli import main


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_torch_contender_computes_bptts_gradient(cell):
    pytest.importorskip("torch")
    case = Case(cell, "small")
    x, y = case.data()
    p = case_params(case)
    lb, gb = make_bptt(case, p, x, y).grads()
    lt, gt = make_torch(case, p, x, y).grads()
    assert abs(lb - lt) <= 1e-5 * lb
    assert max_rel_error(gt, gb) < 1e-4
    assert case.flops == 6.0 * 100 * 32 * ({"elman": 1, "gru": 3, "lstm": 4}[cell] * 128 * 128 + 128 * 65)


def test_run_bench_bptt_alone_and_table():
    res = run_bench([Case("elman", "small")], ["bptt"], repeats=2, warmup=0, memory=False, log=lambda s: None)
    row = res["cases"][0]
    assert len(row["contenders"]["bptt"]["times"]) == 2 and res["gemm_gflops"] > 0
    table = markdown(res)
    assert "| elman small (D=65, H=128, B=32, T=100) |" in table and "1 thread(s) for all" in table


def test_alternated_timings_rotate_and_repeat_steps():
    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def step(self):
            calls.append(self.name)

    times, steps = time_alternated([Fake("a"), Fake("b"), Fake("c")], repeats=3, warmup=2, min_time=0.0, pause=0.0)
    assert steps == {"a": 1, "b": 1, "c": 1} and all(len(v) == 3 for v in times.values())
    assert calls[:6] == ["a", "b", "c", "b", "c", "a"]  # the order rotates every round
    assert steps_per_timing(0.03, 0.2) == 7 and steps_per_timing(0.5, 0.2) == 1 and steps_per_timing(0.0, 0.2) == 1


def test_memory_probe_runs_in_its_own_process():
    m = peak_memory(Case("elman", "small"), "bptt", 1, steps=1)
    assert m is not None and m["peak_mib"] >= m["baseline_mib"] > 0


def test_cli_bench(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "--cells",
                "elman",
                "--sizes",
                "small",
                "--peers",
                "torch",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--no-memory",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["cases"][0]["grad_check"]["torch"] < 1e-3
    assert "bptt / fastest peer" in capsys.readouterr().out
    assert main(["bench", "--cells", "rnn"]) == 2
    assert "--cells: expected one of elman, gru, lstm, received 'rnn'" in capsys.readouterr().err
    assert main(["bench", "--peers", "tensorflow"]) == 2
    assert "--peers: expected one of torch, jax, received 'tensorflow'" in capsys.readouterr().err
    with pytest.raises(ValueError):
        all_cases(("lstm",), ("huge",))


def test_bench_train_times_both_loops_on_the_same_weights_and_batches(tmp_path):
    """bptt bench --train on a tiny configuration: both loops start from the same weights and
    see the same batches (their first losses agree to float32 rounding), each timed round gives
    steps - 1 step times, and the speedup is the ratio of the medians."""
    pytest.importorskip("torch")
    from bptt.bench.train_step import run_train

    lines = []
    res = run_train(1, steps=6, repeats=2, hidden=16, batch_size=4, seq_len=12, log=lines.append)
    assert len(res["first_losses"]["bptt"]) == len(res["first_losses"]["torch"]) == 5
    assert res["loss_difference"] <= 1e-5  # the same computation in float32
    assert len(res["step_times_s"]["bptt"]) == len(res["step_times_s"]["torch"]) == 2 * 5
    med = res["median_step_s"]
    assert res["speedup"] == pytest.approx(med["torch"] / med["bptt"])
    assert "BLAS: " in lines[0] and "kernels" in lines[0] and "bptt" in lines[-1] and "x torch" in lines[-1]
