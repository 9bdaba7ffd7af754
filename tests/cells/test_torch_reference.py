"""Full BPTT against PyTorch autograd on the same weights (biases and initial states included).

torch.nn.RNN / GRU / LSTM + nn.Linear + cross-entropy (mean over positions) are built with
bptt's random parameters copied in by name (bptt.interop); loss, every parameter gradient and
the initial-state gradient must agree to 1e-10 relative in float64 and 1e-4 in float32.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from bptt import Dense, Model, full_bptt, rnn  # noqa: E402
from bptt.diagnostics import random_problem, relative_error  # noqa: E402
from bptt.interop import state_to_torch, to_torch, torch_names  # noqa: E402

TORCH_CELL = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
TOL = {np.float64: 1e-10, np.float32: 1e-4}
D, H, K, T, B = 5, 6, 7, 9, 4


def torch_model(model, params, dtype):
    rec = model.recurrent_levels
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    opts = {}
    if rec[0].kind == "elman":
        opts["nonlinearity"] = rec[0].directions[0].cell.activation.name
    rnn_mod = TORCH_CELL[rec[0].kind](D, H, num_layers=len(rec), bidirectional=rec[0].bidirectional, **opts).to(tdt)
    lin = torch.nn.Linear(H * (2 if rec[0].bidirectional else 1), K).to(tdt)
    with torch.no_grad():
        for name, arr in to_torch(model, params).items():
            mod, pname = name.split(".", 1)
            getattr(rnn_mod if mod == "rnn" else lin, pname).copy_(torch.from_numpy(arr))
    return rnn_mod, lin


def torch_loss_and_grads(model, p, dtype, packed=False):
    rnn_mod, lin = torch_model(model, p.params, dtype)
    h0, c0 = state_to_torch(model, p.state0)
    h0 = torch.from_numpy(h0.copy()).requires_grad_()
    hx = h0
    if c0 is not None:
        c0 = torch.from_numpy(c0.copy()).requires_grad_()
        hx = (h0, c0)
    x = torch.from_numpy(p.x)
    if packed:
        lengths = torch.from_numpy(p.mask.sum(axis=0))
        xs = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, _ = rnn_mod(xs, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        out, _ = rnn_mod(x, hx)
    logits = lin(out)  # (T, B, K)
    targets = torch.from_numpy(p.targets)
    if model.loss_fn.at == "last":
        idx = torch.from_numpy(p.mask.sum(axis=0) - 1 if packed else np.full(B, T - 1))
        loss = torch.nn.functional.cross_entropy(logits[idx, torch.arange(B)], targets)
    elif packed:
        m = torch.from_numpy(p.mask)
        loss = torch.nn.functional.cross_entropy(logits[m], targets[m])
    else:
        loss = torch.nn.functional.cross_entropy(logits.reshape(T * B, K), targets.reshape(-1))
    loss.backward()
    grads = {}
    for bname, tname in torch_names(model).items():
        mod, pname = tname.split(".", 1)
        grads[bname] = getattr(rnn_mod if mod == "rnn" else lin, pname).grad.numpy()
    return loss.item(), grads, h0.grad.numpy(), None if c0 is None else c0.grad.numpy()


def compare(model, p, dtype, packed=False):
    g = full_bptt(model, p.params, p.x, p.targets, mask=p.mask, state0=p.state0)
    tloss, tgrads, th0, tc0 = torch_loss_and_grads(model, p, dtype, packed)
    tol = TOL[dtype]
    assert abs(g.loss - tloss) <= tol * abs(tloss)
    assert set(g.grads) == set(tgrads)
    for k in g.grads:
        assert g.grads[k].dtype == dtype
        assert relative_error(g.grads[k], tgrads[k]) <= tol, k
    h, c = state_to_torch(model, g.dstate0)
    assert relative_error(h, th0) <= tol
    if c is not None:
        assert relative_error(c, tc0) <= tol


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_matches_torch_autograd(cell, layers, bidirectional, dtype):
    model = Model(D, [rnn(cell, H, layers, bidirectional), Dense(K)], loss="ce")
    p = random_problem(model, np.random.default_rng(layers * 10 + bidirectional), T=T, B=B, dtype=dtype)
    compare(model, p, dtype)


@pytest.mark.parametrize("at", ["every", "last"])
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_masks_match_torch_packed_sequences(cell, at):
    """Right-padded batch with a mask == torch's pack_padded_sequence (bidirectional, 2 layers):
    the reverse direction starts at each sequence's own last step."""
    model = Model(D, [rnn(cell, H, 2, True), Dense(K)], loss="ce", at=at)
    p = random_problem(model, np.random.default_rng(3), T=T, B=B, masked=True)
    compare(model, p, np.float64, packed=True)


def test_relu_elman_matches_torch():
    model = Model(D, [rnn("elman", H, 2, True, activation="relu"), Dense(K)], loss="ce")
    p = random_problem(model, np.random.default_rng(5), T=T, B=B)
    compare(model, p, np.float64)
