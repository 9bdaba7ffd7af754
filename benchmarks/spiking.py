"""A training step of a recurrent LIF network: bptt against snntorch (PyTorch), same sizes, same
CPU and threads, alternated, medians.

LIF 256 recurrent neurons (all-to-all), B = 32, T = 200, 40 inputs, float32; reset by
subtraction with the reset's gradient stopped (snntorch's RLeaky), fast-sigmoid surrogate
(slope 25); readout: 2 units summing the spikes over time, cross-entropy at the last step. One
step = forward, loss, backward (gradients of every weight); no optimizer.

pip install ".[bench]" snntorch==1.0.0
python benchmarks/spiking.py [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=200)
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import snntorch as snn
    import torch
    from snntorch import surrogate
    from threadpoolctl import threadpool_info

    import bptt

    torch.set_num_threads(args.threads)
    H, B, T, D = args.hidden, args.batch, args.length, 40
    rng = np.random.default_rng(0)
    x = (rng.random((T, B, D)) < 0.2).astype(np.float32)
    y = rng.integers(0, 2, B)
    model = bptt.Model(
        D,
        [
            bptt.Recurrent("lif", H, decay=0.9, threshold=1.0, detach_reset=True, surrogate="fast_sigmoid", slope=25),
            bptt.Recurrent("leaky", 2, decay=1.0),
        ],
        at="last",
    )
    params = model.init_params(rng, np.float32)
    params["lif0.W_ih"] *= 3
    full = bptt.algorithms.make("full")

    fc_in, fc_out = torch.nn.Linear(D, H), torch.nn.Linear(H, 2)
    lif = snn.RLeaky(
        beta=0.9, threshold=1.0, linear_features=H, all_to_all=True, spike_grad=surrogate.fast_sigmoid(slope=25)
    )
    with torch.no_grad():
        fc_in.weight.copy_(torch.tensor(params["lif0.W_ih"]))
        fc_in.bias.copy_(torch.tensor(params["lif0.b_ih"]))
        lif.recurrent.weight.copy_(torch.tensor(params["lif0.W_hh"]))
        lif.recurrent.bias.copy_(torch.tensor(params["lif0.b_hh"]))
        fc_out.weight.copy_(torch.tensor(params["leaky1.W_ih"]))
        fc_out.bias.copy_(torch.tensor(params["leaky1.b_ih"]))
    tx, ty = torch.tensor(x), torch.tensor(y)
    modules = [fc_in, fc_out, lif]

    def step_bptt() -> float:
        return full(model, params, x, y).loss

    def step_snntorch() -> float:
        for m in modules:
            m.zero_grad(set_to_none=True)
        spk, mem = lif.init_rleaky()
        cur = fc_in(tx.reshape(T * B, D)).reshape(T, B, H)
        total = 0
        for t in range(T):
            spk, mem = lif(cur[t], spk, mem)
            total = total + fc_out(spk)
        loss = torch.nn.functional.cross_entropy(total, ty)
        loss.backward()
        return loss.item()

    la, lb = step_bptt(), step_snntorch()  # warm (and the same network: the same loss)
    times: dict[str, list[float]] = {"bptt": [], "snntorch": []}
    for _ in range(args.repeats):
        for name, f in (("bptt", step_bptt), ("snntorch", step_snntorch)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}" for i in threadpool_info())
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(
        f"LIF {H} recurrent, B = {B}, T = {T}, float32, one training step (forward, loss, backward); {cpu}, "
        f"{args.threads} threads ({blas}); torch {torch.__version__}, snntorch {snn.__version__}, "
        f"Python {platform.python_version()}; medians of {args.repeats} alternated steps"
    )
    print(f"losses: bptt {la:.6f}, snntorch {lb:.6f}")
    print("| contender | step | vs bptt |")
    print("| --- | --- | --- |")
    for k in ("bptt", "snntorch"):
        print(f"| {k} | {med[k] * 1e3:.1f} ms | {med[k] / med['bptt']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
