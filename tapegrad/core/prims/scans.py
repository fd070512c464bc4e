"""Scans: `cumsum` and `cumprod`, running sums and products along an axis of a flat buffer.

The payload names, for each value, its predecessor along the axis (its flat index, or -1 for the
first value of a run): y[i] = x[i] where ip[i] < 0, else y[i] = y[ip[i]] op x[i]. Predecessors
come first (ip[i] < i), so one pass in index order computes every run of the scan, for any axis
and any number of runs, as numpy's `add.accumulate` / `multiply.accumulate` do: one value after
the other, each rounded once.

The reverse scans run in the other direction: a value's adjoint collects those of its
successors. `cumprod` divides by nothing, so it is exact at zero factors in every rule: with
P(i) = y[ip[i]] the product before i (1 at a run's start) and R(i) = gy[i] + x[s] R(s) for the
successor s of i (the adjoint of the product from i on), dy/dx gives gx[i] = P(i) R(i).

Scratch: `cumsum` one row per value (its VJP's running adjoint), `cumprod` two (R and, for the
second order, its tangent)."""
import numpy as np

from ..primitive import structural, temp, view
from . import dependence


def _predecessors(ip, n_out, sizes):
    """One predecessor per value, each before it (or -1): a forest walked in index order."""
    if ip.size != n_out or sizes[0] != n_out:
        return f"needs a payload and an operand of the output's {n_out} values"
    if n_out and ((ip < -1).any() or (ip >= np.arange(n_out)).any()):
        return "each value's predecessor must come before it (or be -1)"
    return None


cumsum = structural(77, "cumsum", "CumsumBackward0", _predecessors, linear=True,
                    reads_elements=dependence.predecessor_chains, scratch=lambda n_out: n_out, doc="y[i] = y[ip[i]] + x[i]")
cumprod = structural(78, "cumprod", "CumprodBackward0", _predecessors, reads=(((0,), True),),
                     reads_elements=dependence.predecessor_chains, curvature="nonlinear",
                     scratch=lambda n_out: 2 * n_out, doc="y[i] = y[ip[i]] * x[i]")


@cumsum.fwd
def cumsum_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    for i in range(y.size):
        prev = ip[i]
        if prev < 0:
            y[i] = x[i]
        else:
            y[i] = y[prev] + x[i]


@cumsum.vjp
def cumsum_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    """gx[i] += the sum of gy over i and its successors (a reverse scan)."""
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        n = gy.size
        acc = temp(V, 0, n)
        for i in range(n):
            acc[i] = gy[i]
        for k in range(n):
            i = n - 1 - k
            prev = ip[i]
            if prev >= 0:
                acc[prev] += acc[i]
        for i in range(n):
            gx[i] += acc[i]


@cumprod.fwd
def cumprod_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    for i in range(y.size):
        prev = ip[i]
        if prev < 0:
            y[i] = x[i]
        else:
            y[i] = y[prev] * x[i]


@cumprod.vjp
def cumprod_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    """gx[i] += P(i) R(i) (see the module docstring): no division, exact at zeros."""
    if NEED[a]:
        x = view(V, S, a)
        y = view(V, S, o)
        gx = view(G, S, a)
        gy = view(G, S, o)
        n = gy.size
        r = temp(V, 0, n)
        for i in range(n):
            r[i] = gy[i]
        for k in range(n):
            i = n - 1 - k
            prev = ip[i]
            if prev >= 0:
                r[prev] += x[i] * r[i]
        for i in range(n):
            prev = ip[i]
            if prev < 0:
                gx[i] += r[i]
            else:
                gx[i] += y[prev] * r[i]


@cumprod.jvp
def cumprod_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    tx = view(T, S, a)
    ty = view(T, S, o)
    for i in range(ty.size):
        prev = ip[i]
        if prev < 0:
            ty[i] = tx[i]
        else:
            ty[i] = ty[prev] * x[i] + y[prev] * tx[i]


@cumprod.vjp_jvp
def cumprod_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    """The tangent of gx[i] = P(i) R(i): tP(i) R(i) + P(i) tR(i), with tP(i) = ty[ip[i]] (the
    tangent sweep's) and tR(i) = tgy[i] + tx[s] R(s) + x[s] tR(s) over the successors s."""
    if NEED[a]:
        x = view(V, S, a)
        y = view(V, S, o)
        tx = view(T, S, a)
        ty = view(T, S, o)
        gy = view(G, S, o)
        tgy = view(TG, S, o)
        tgx = view(TG, S, a)
        n = gy.size
        r = temp(V, 0, n)
        tr = temp(V, n, n)
        for i in range(n):
            r[i] = gy[i]
            tr[i] = tgy[i]
        for k in range(n):
            i = n - 1 - k
            prev = ip[i]
            if prev >= 0:
                tr[prev] += tx[i] * r[i] + x[i] * tr[i]
                r[prev] += x[i] * r[i]
        for i in range(n):
            prev = ip[i]
            if prev < 0:
                tgx[i] += tr[i]
            else:
                tgx[i] += ty[prev] * r[i] + y[prev] * tr[i]
