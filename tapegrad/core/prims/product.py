"""segprod: the product over segments, y[s] = prod(x[i] for ip[i] == s) (`prod` over axes);
exact at zero factors: no division by a zero factor, in any order of derivative.

Scratch (4 rows per output value): the number of zero factors of each segment, the product of
its nonzero factors, and for the second order the sum of t/x over its nonzero factors and the
tangent of its zero factors."""
from ..primitive import Values, helper, structural, temp, view
from . import dependence, shapes

segprod = structural(42, "segprod", "ProdBackward1", shapes.segments, reads=(((0,), False),),
                     scratch=lambda n_out: 4 * n_out, reads_elements=dependence.segments,
                     curvature="nonlinear")


@helper
def _parts(V: Values, S, a, o, ip, zeros: Values, nonzero: Values):
    """Per segment: the number of zero factors and the product of the nonzero ones."""
    x = view(V, S, a)
    zeros[:] = 0.0
    nonzero[:] = 1.0
    for i in range(x.size):
        s = ip[i]
        if x[i] == 0.0:
            zeros[s] += 1.0
        else:
            nonzero[s] *= x[i]


@helper
def _others(zeros, nonzero, xi):
    """The product of the other factors of a factor xi of a segment with `zeros` zero factors
    and the product `nonzero` of its nonzero ones."""
    if zeros == 0.0:
        return nonzero / xi
    if zeros == 1.0 and xi == 0.0:
        return nonzero
    return 0.0


@segprod.fwd
def segprod_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = 1.0
    for i in range(x.size):
        y[ip[i]] *= x[i]


@segprod.vjp
def segprod_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        nseg = S[o, 1]
        zeros = temp(V, 0, nseg)
        nonzero = temp(V, nseg, nseg)
        _parts(V, S, a, o, ip, zeros, nonzero)
        x = view(V, S, a)
        gx = view(G, S, a)
        gy = view(G, S, o)
        for i in range(x.size):
            s = ip[i]
            gx[i] += gy[s] * _others(zeros[s], nonzero[s], x[i])


@segprod.jvp
def segprod_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    nseg = S[o, 1]
    zeros = temp(V, 0, nseg)
    nonzero = temp(V, nseg, nseg)
    _parts(V, S, a, o, ip, zeros, nonzero)
    x = view(V, S, a)
    tx = view(T, S, a)
    ty = view(T, S, o)
    ty[:] = 0.0
    for i in range(x.size):
        s = ip[i]
        ty[s] += _others(zeros[s], nonzero[s], x[i]) * tx[i]


@segprod.vjp_jvp
def segprod_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    """tg[i] += tgy * d[i] + gy * sum_{j != i} t[j] * (product without i and j)."""
    if NEED[a]:
        nseg = S[o, 1]
        zeros = temp(V, 0, nseg)
        nonzero = temp(V, nseg, nseg)
        ratio = temp(V, 2 * nseg, nseg)
        tzero = temp(V, 3 * nseg, nseg)
        _parts(V, S, a, o, ip, zeros, nonzero)
        x = view(V, S, a)
        tx = view(T, S, a)
        gy = view(G, S, o)
        tgy = view(TG, S, o)
        tgx = view(TG, S, a)
        ratio[:] = 0.0
        tzero[:] = 0.0
        for j in range(x.size):
            s = ip[j]
            if x[j] == 0.0:
                tzero[s] += tx[j]
            else:
                ratio[s] += tx[j] / x[j]
        for i in range(x.size):
            s = ip[i]
            d = _others(zeros[s], nonzero[s], x[i])
            z = zeros[s]
            if z == 0.0:
                cross = d * (ratio[s] - tx[i] / x[i])
            elif z == 1.0:
                if x[i] == 0.0:         # the others of i are all nonzero
                    cross = d * ratio[s]
                else:                   # the only surviving term takes the zero factor's tangent
                    cross = nonzero[s] / x[i] * tzero[s]
            elif z == 2.0 and x[i] == 0.0:
                cross = nonzero[s] * (tzero[s] - tx[i])
            else:
                cross = 0.0
            tgx[i] += tgy[s] * d + gy[s] * cross
