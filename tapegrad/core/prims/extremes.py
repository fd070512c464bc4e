"""Segment maximum and minimum (`amax`, `max` over axes): ties share the gradient evenly, as in
PyTorch's amax and JAX's max; NaN propagates."""
import math

from ..primitive import Values, helper, structural, temp, view
from . import dependence, shapes

segmax = structural(40, "segmax", "AmaxBackward0", shapes.segments, reads=(((0,), True),),
                    scratch=lambda n_out: n_out, reads_elements=dependence.segments,
                    curvature="linear")
segmin = structural(41, "segmin", "AminBackward0", shapes.segments, reads=(((0,), True),),
                    scratch=lambda n_out: n_out, reads_elements=dependence.segments,
                    curvature="linear")


@helper
def _extreme(V: Values, S, a, o, ip, sign):
    """y = sign * (segment maximum of sign * x): the maximum for sign 1, the minimum for -1."""
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = -math.inf
    for i in range(x.size):
        s = ip[i]
        v = sign * x[i]
        if v > y[s] or v != v:
            y[s] = v
    for s in range(y.size):
        y[s] = sign * y[s]


@helper
def _ties(V: Values, S, a, o, ip, count: Values):
    """count[s]: the number of elements of segment s that attain its extreme."""
    x = view(V, S, a)
    y = view(V, S, o)
    count[:] = 0.0
    for i in range(x.size):
        s = ip[i]
        if x[i] == y[s]:
            count[s] += 1.0


@helper
def _extreme_vjp(V: Values, G: Values, S, NEED, a, o, ip):
    """The adjoint shared by each segment's ties. The extreme of everything (one segment, the
    common `np.max(x)`) counts its ties in a scalar: the scratch of the general case is an
    allocation per entry in the flat layout, most of a small entry's time."""
    if NEED[a]:
        x = view(V, S, a)
        y = view(V, S, o)
        gx = view(G, S, a)
        gy = view(G, S, o)
        if y.size == 1:
            ties = 0.0
            for i in range(x.size):
                if x[i] == y[0]:
                    ties += 1.0
            for i in range(gx.size):
                if x[i] == y[0]:
                    gx[i] += (1.0 / ties) * gy[0]
        else:
            count = temp(V, 0, S[o, 1])
            _ties(V, S, a, o, ip, count)
            for i in range(gx.size):
                s = ip[i]
                if x[i] == y[s]:
                    gx[i] += (1.0 / count[s]) * gy[s]


@helper
def _extreme_jvp(V: Values, T: Values, S, a, o, ip):
    count = temp(V, 0, S[o, 1])
    _ties(V, S, a, o, ip, count)
    x = view(V, S, a)
    y = view(V, S, o)
    tx = view(T, S, a)
    ty = view(T, S, o)
    ty[:] = 0.0
    for i in range(tx.size):
        s = ip[i]
        if x[i] == y[s]:
            ty[s] += (1.0 / count[s]) * tx[i]


@segmax.fwd
def segmax_fwd(V, S, a, b, c, o, ip, c0, c1):
    _extreme(V, S, a, o, ip, 1.0)


@segmax.vjp
def segmax_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _extreme_vjp(V, G, S, NEED, a, o, ip)


@segmax.jvp
def segmax_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _extreme_jvp(V, T, S, a, o, ip)


@segmax.vjp_jvp
def segmax_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _extreme_vjp(V, TG, S, NEED, a, o, ip)       # piecewise linear: no curvature term


@segmin.fwd
def segmin_fwd(V, S, a, b, c, o, ip, c0, c1):
    _extreme(V, S, a, o, ip, -1.0)


@segmin.vjp
def segmin_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _extreme_vjp(V, G, S, NEED, a, o, ip)


@segmin.jvp
def segmin_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _extreme_jvp(V, T, S, a, o, ip)


@segmin.vjp_jvp
def segmin_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _extreme_vjp(V, TG, S, NEED, a, o, ip)


# The extreme of everything (one output element: `np.max(v)` of a few values, as in a softmax
# over a handful of scalars) runs inline in the flat sweeps (`core.codegen.scalar_path`): the
# loops of `_extreme` and of `_extreme_vjp`'s one-segment case, over the buffers at the
# operand's offset, with the same comparisons and products.
for _prim, _sign in ((segmax, "1.0"), (segmin, "-1.0")):
    _prim.scalar.update(
        forward=("extreme_at = S[sa, 0]\nextreme = -math.inf\n"
                 "for extreme_i in range(S[sa, 1]):\n"
                 f"    extreme_v = {_sign} * V[extreme_at + extreme_i]\n"
                 "    if extreme_v > extreme or extreme_v != extreme_v:\n"
                 "        extreme = extreme_v\n"
                 f"V[o] = {_sign} * extreme\n"),
        backward=("if NEED[so] and NEED[sa]:\n    extreme_at = S[sa, 0]\n    y = V[o]\n"
                  "    ties = 0.0\n    for extreme_i in range(S[sa, 1]):\n"
                  "        if V[extreme_at + extreme_i] == y:\n            ties += 1.0\n"
                  "    for d in range(G.shape[0]):\n"
                  "        for extreme_i in range(S[sa, 1]):\n"
                  "            if V[extreme_at + extreme_i] == y:\n"
                  "                G[d, extreme_at + extreme_i] += (1.0 / ties) * G[d, o]\n"))
