"""softmax: y = exp(x - m) / sum(exp(x - m)), m = max(x), over all of x, one entry.

numpy code writes a softmax as five operations (`e = np.exp(v - np.max(v)); e / np.sum(e)`),
five entries of the tape; while a function is traced, `eager.ops.div` records this one entry
in their place (the five nodes stay in the graph for any other use of their values), as
`tapegrad.softmax` of a whole array does. With c0 != 0 (`tapegrad.softmax`, PyTorch's
semantics) a maximum that is not finite is replaced by 0, as that function's `where` does. On a
graph of small softmaxes (the FAW benchmark's softmax of 4 scalars) the five entries cost
about 250 ns per replay in dispatch and small loops, the one entry a fraction of that.

The forward computes what the five entries compute, in the same order of operations and the
same types: the maximum (NaN if any value is NaN), each difference stored in the output's
type, the vectorisable exp of the CPU interpreters, the sum in numpy's order (`total`'s: fewer
than 8 values one after another in a float64 accumulator, more pairwise), then each value
divided by the sum. So in float64 a replay gives the bits of the five entries' replay; in
float32 the division by a sum of fewer than 8 values is by the float64 accumulator, not by its
float32 rounding (an ulp at most). The CUDA layout adds one value after another (as `total`),
so it needs no scratch rows; the CPU layouts' pairwise sum keeps its pending halves in rows
0..63 of their scratch and the sum in row 64.

Derivatives, from the output only (y = softmax(x), <u, v> = sum_j u_j v_j):
  VJP   gx_i += y_i (gy_i - <gy, y>)
  JVP   ty_i  = y_i (tx_i - <y, tx>)
  VJP-of-JVP (ty from tx as above):
        tgx_i += ty_i (gy_i - <gy, y>) + y_i (tgy_i - <tgy, y> - <gy, ty>)
The maximum's subgradient cancels exactly (softmax does not change when every x_i moves by the
same amount), so ties and the maximum's position do not appear.
"""
import math

from ..primitive import structural, temp, view
from . import dependence
from .sums import _pairwise_sum


def _check(ip, n_out, sizes):
    if ip.size:
        return f"takes no payload, got {ip.size} integers"
    if n_out < 1:
        return "needs at least one value"
    if sizes[0] != n_out:
        return f"needs an operand of the output's size {n_out}, got {sizes[0]}"
    return None


softmax = structural(86, "softmax", "DivBackward0", _check, reads=(((), True),),
                     reads_elements=dependence.every_operand,
                     curvature="nonlinear", inline=True,
                     doc="y = exp(x - m) / sum(exp(x - m)), m = max(x) (c0 != 0: 0 if not finite)")


@softmax.fwd
def softmax_fwd(V, S, a, b, c, o, ip, c0, c1):
    """The loops are written out here, not in a helper shared with the CUDA form: the call of
    a helper cost 25 of 68 ns on a softmax of 4 values (the FAW graph's)."""
    x = view(V, S, a)
    y = view(V, S, o)
    m = x[0]
    for i in range(1, x.size):
        if x[i] > m or x[i] != x[i]:
            m = x[i]
    if c0 != 0.0 and m - m != 0.0:
        m = 0.0
    if y.size < 8:
        acc = 0.0
        for i in range(y.size):
            y[i] = x[i] - m
            y[i] = math.exp(y[i])
            acc += y[i]
        for i in range(y.size):
            y[i] = y[i] / acc
    else:
        for i in range(y.size):
            y[i] = x[i] - m
            y[i] = math.exp(y[i])
        total = temp(V, 64, 1)
        _pairwise_sum(V, S, o, total)
        for i in range(y.size):
            y[i] = y[i] / total[0]


@softmax.rule("fwd", layout="cuda")
def softmax_fwd_cuda(V, S, a, b, c, o, ip, c0, c1):
    """`softmax_fwd` with the sum of fewer than 8 values at any length."""
    x = view(V, S, a)
    y = view(V, S, o)
    m = x[0]
    for i in range(1, x.size):
        if x[i] > m or x[i] != x[i]:
            m = x[i]
    if c0 != 0.0 and m - m != 0.0:
        m = 0.0
    acc = 0.0
    for i in range(y.size):
        y[i] = x[i] - m
        y[i] = math.exp(y[i])
        acc += y[i]
    for i in range(y.size):
        y[i] = y[i] / acc


@softmax.vjp
def softmax_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        y = view(V, S, o)
        gx = view(G, S, a)
        gy = view(G, S, o)
        dot = 0.0
        for i in range(y.size):
            dot += gy[i] * y[i]
        for i in range(y.size):
            gx[i] += y[i] * (gy[i] - dot)


@softmax.jvp
def softmax_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    y = view(V, S, o)
    tx = view(T, S, a)
    ty = view(T, S, o)
    dot = 0.0
    for i in range(y.size):
        dot += y[i] * tx[i]
    for i in range(y.size):
        ty[i] = y[i] * (tx[i] - dot)


@softmax.vjp_jvp
def softmax_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        y = view(V, S, o)
        tx = view(T, S, a)
        gy = view(G, S, o)
        tgy = view(TG, S, o)
        tgx = view(TG, S, a)
        y_tx = 0.0
        gy_y = 0.0
        tgy_y = 0.0
        for i in range(y.size):
            y_tx += y[i] * tx[i]
            gy_y += gy[i] * y[i]
            tgy_y += tgy[i] * y[i]
        gy_ty = 0.0
        for i in range(y.size):
            gy_ty += gy[i] * (y[i] * (tx[i] - y_tx))
        for i in range(y.size):
            ty = y[i] * (tx[i] - y_tx)
            tgx[i] += ty * (gy[i] - gy_y) + y[i] * (tgy[i] - tgy_y - gy_ty)
