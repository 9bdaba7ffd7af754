"""The spiking cells (LIF, ALIF) on float32 compiled scans: the time loop in compiled code, the
recurrent product of each step through NumPy's BLAS (scans.py's cblas_sgemm), the elementwise
part of cells/spiking.py's equations per row. Unmasked forward scans that keep their tape, and
consumed backward scans whose recurrent weights' gradient is ONE product over all T * B rows
afterwards, as for the other built-in cells; everything else (masks, rings, step-by-step
backward) runs the cell's own NumPy steps, which these are tested against (tests/fast).

Buffers of a forward scan, each (T, B, H) float32: V (membrane), Z (spikes), X (v - A, where
the surrogate is taken), and for ALIF A (adaptation), with refractory steps R (steps left).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cells.base import Params
from ..cells.spiking import ALIF, LIF, _SpikeCache
from ..tape import Tape
from . import pool, switch

try:
    from . import scans

    SCANS = scans.AVAILABLE
except ImportError:  # pragma: no cover
    SCANS = False

_SURROGATES = {"fast_sigmoid": 0, "arctan": 1, "triangle": 2}

if SCANS:
    from .jit import inline, jit
    from .scans import _at, _mm

    @inline
    def _psi(kind, x, k):
        if kind == 0:
            u = np.float32(1.0) + k * abs(x)
            return np.float32(1.0) / (u * u)
        if kind == 1:
            w = np.float32(np.pi / 2) * k * x
            return (k * np.float32(0.5)) / (np.float32(1.0) + w * w)
        u = np.float32(1.0) - k * abs(x)
        return k * (np.float32(0.0) if u < np.float32(0.0) else u)  # (a NaN stays NaN: max(0, NaN) is 0)

    @jit
    def spike_scan(
        src, idx, W, has_w, alpha, theta, rho, beta, adaptive, subtract, refr, v0, z0, a0, r0, V, Z, X, A, R, reverse
    ):
        """V, Z, X, A, R [t] <- the step's membrane, spikes, v - A, adaptation, refractory steps left
        (A, R: one row each, unused, for LIF without refractory steps)."""
        T = idx.shape[0]
        H = V.shape[2]
        for s in range(T):
            t = _at(s, T, reverse)
            p = -1 if s == 0 else _at(s - 1, T, reverse)
            zp = z0 if p < 0 else Z[p]
            vp = v0 if p < 0 else V[p]
            cur = X[t]
            if has_w:
                _mm(zp, W, cur, True, np.float32(0.0))
            else:
                cur[:] = 0
            for b in range(cur.shape[0]):
                row = src[idx[t, b]]
                for j in range(H):
                    v = (
                        alpha[j] * vp[b, j] + (row[j] + cur[b, j])
                        if subtract
                        else alpha[j] * vp[b, j] * (np.float32(1.0) - zp[b, j]) + (row[j] + cur[b, j])
                    )
                    if subtract:
                        v = v - theta[j] * zp[b, j]
                    thr = theta[j]
                    if adaptive:
                        ap = a0[b, j] if p < 0 else A[p, b, j]
                        a = rho[j] * ap + zp[b, j]
                        A[t, b, j] = a
                        thr = theta[j] + beta[j] * a
                    x = v - thr
                    z = np.float32(1.0) if x > 0 else np.float32(0.0)
                    if refr > 0:
                        rp = r0[b, j] if p < 0 else R[p, b, j]
                        r = np.float32(refr) if zp[b, j] > 0 else max(rp - np.float32(1.0), np.float32(0.0))
                        R[t, b, j] = r
                        if r != 0:
                            z = np.float32(0.0)
                    V[t, b, j] = v
                    X[t, b, j] = x
                    Z[t, b, j] = z

    @jit
    def spike_scan_back(
        W, has_w, alpha, theta, rho, beta, adaptive, subtract, detach, refr, kind, k, gain, v0, z0,
        V, Z, X, R, douts, dv, dz, da, DV, Zp, dleak, scale, reverse,
    ):  # fmt: skip
        """Consumed tape: DV[t] <- dL/dxp_t (= dL/dv_t), Zp[t] <- z_{t-1}; dv, dz, da: dL/d(v, z,
        a) at the last step in, at the initial state out; dleak[j] += sum_b dL/dv_t * (the
        leaked term's v) over the steps; the message leaving step t is multiplied by scale[t]
        ((T, B), or (0, 0): none)."""
        T = V.shape[0]
        B, H = dv.shape
        for s in range(T - 1, -1, -1):
            t = _at(s, T, reverse)
            p = -1 if s == 0 else _at(s - 1, T, reverse)
            zp = z0 if p < 0 else Z[p]
            vp = v0 if p < 0 else V[p]
            d = DV[t]
            g = douts[t]
            Zp[t] = zp
            for b in range(B):
                for j in range(H):
                    e = (dz[b, j] + g[b, j]) * _psi(kind, X[t, b, j], k) * gain
                    if refr > 0 and R[t, b, j] != 0:
                        e *= np.float32(0.0)  # (as the reference: a NaN stays NaN)
                    dvt = dv[b, j] + e
                    d[b, j] = dvt
                    keep = np.float32(1.0) if subtract else np.float32(1.0) - zp[b, j]
                    dleak[j] += dvt * vp[b, j] * keep
                    dv[b, j] = alpha[j] * keep * dvt
                    if adaptive:
                        dat = da[b, j] - beta[j] * e
                        da[b, j] = rho[j] * dat
                        dz[b, j] = dat  # (the recurrent product below adds to it)
                    else:
                        dz[b, j] = np.float32(0.0)
                    if not detach:
                        dz[b, j] -= theta[j] * dvt if subtract else alpha[j] * vp[b, j] * dvt
            if has_w:
                _mm(d, W, dz, False, np.float32(1.0))
            if scale.shape[0] > 0:
                for b in range(B):
                    f = scale[t, b]
                    for j in range(H):
                        dv[b, j] *= f
                        dz[b, j] *= f
                        da[b, j] *= f


class FastSpiking:
    """A LIF or ALIF cell with compiled whole scans; its steps are the cell's own."""

    def __init__(self, cell: LIF) -> None:
        self.cell = cell

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cell, name)

    def _consts(self, params: Params) -> tuple:
        c, f = self.cell, np.float32
        H = c.hidden_size
        alpha = np.ascontiguousarray(c.alpha(params), f)
        rho = np.ascontiguousarray(c.rho if c.adaptive else np.zeros(H), f)
        beta = np.ascontiguousarray(c.beta if c.adaptive else np.zeros(H), f)
        W = np.ascontiguousarray(params["W_hh"]) if c.recurrent else np.zeros((1, 1), f)
        return W, alpha, np.ascontiguousarray(c.threshold, f), rho, beta

    def forward_scan(self, params: Params, xp: Any, state: Any, reverse: bool, ring: bool = False, stops=(), kept=None):
        if not (SCANS and switch.scans_on()) or ring or stops:  # (scan.py's time loop keeps the stops)
            return None
        from .cells import StepCaches, check_scan, previous_step, scan_rows

        c = self.cell
        check_scan(c, xp, state)
        src, idx = scan_rows(xp)
        T, B = idx.shape
        H = c.hidden_size
        V, Z, X = (pool.empty((T, B, H), np.float32) for _ in range(3))
        A = pool.empty((T, B, H), np.float32) if c.adaptive else np.zeros((1, 1, 1), np.float32)
        R = pool.empty((T, B, H), np.float32) if c.refractory else np.zeros((1, 1, 1), np.float32)
        W, alpha, theta, rho, beta = self._consts(params)
        v0, z0, r0 = (np.ascontiguousarray(getattr(state, f), np.float32) for f in ("v", "z", "r"))
        a0 = np.ascontiguousarray(state.a, np.float32) if c.adaptive else np.zeros((1, 1), np.float32)
        spike_scan(
            src, idx, W, c.recurrent, alpha, theta, rho, beta, c.adaptive, c.reset == "subtract", c.refractory,
            v0, z0, a0, r0, V, Z, X, A, R, reverse,
        )  # fmt: skip

        def at(t: int) -> Any:
            fields = {"v": V[t], "z": Z[t], "r": R[t] if c.refractory else r0}
            if c.adaptive:
                fields["a"] = A[t]
            return c.State(**fields)

        first = c.State(**{f: getattr(state, f) for f in c.State._fields})

        def cache(t: int) -> _SpikeCache:
            p = previous_step(t, T, reverse)
            before = first if p is None else at(p)
            free = (R[t] == 0) if c.refractory else None
            return _SpikeCache(before.v, before.z, X[t], free, before.a if c.adaptive else None)

        last = 0 if reverse else T - 1
        return Z, at(last), Tape(StepCaches(cache, T), None, reverse, (V, Z, X, R, v0, z0))

    def backward_scan(self, params: Params, tape: Tape, douts, scale, dstate: Any, grads: Params):
        from .cells import check_scan_back

        c = self.cell
        V, Z, X, R, v0, z0 = tape.aux
        check_scan_back(c, douts, dstate, V.shape[:2])
        T, B, H = V.shape
        W, alpha, theta, rho, beta = self._consts(params)
        dv = np.array(dstate.v, np.float32, order="C")
        dz = np.array(dstate.z, np.float32, order="C")
        da = np.array(dstate.a if c.adaptive else np.zeros((B, H)), np.float32, order="C")
        DV, Zp = pool.empty((T, B, H), np.float32), pool.empty((T, B, H), np.float32)
        dleak = np.zeros(H, np.float32)
        f = np.zeros((0, 0), np.float32) if scale is None else np.ascontiguousarray(scale, np.float32)
        spike_scan_back(
            W, c.recurrent, alpha, theta, rho, beta, c.adaptive, c.reset == "subtract", c.detach_reset,
            c.refractory, _SURROGATES[c.surrogate], np.float32(c.slope), np.float32(c.surrogate_scale),
            v0, z0, V, Z, X, R, np.ascontiguousarray(douts, np.float32), dv, dz, da, DV, Zp, dleak, f, tape.reverse,
        )  # fmt: skip
        tape.caches.release()
        if c.recurrent:
            pool.matmul_add(DV.reshape(T * B, H).T, Zp.reshape(T * B, H), grads["W_hh"])
        if c.learn_decay:
            grads["decay_logit"] += dleak * alpha * (1 - alpha)
        zeros = np.zeros((B, H), np.float32)
        d0 = c.State(v=dv, z=dz, a=da, r=zeros) if c.adaptive else c.State(v=dv, z=dz, r=zeros)
        return DV, d0


SPIKING = (LIF, ALIF)
