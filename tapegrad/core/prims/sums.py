"""Sums: `segsum` (scaled segment sum: sum and mean over axes), `segsumsq` (the segment sum of
squares, sum(x * x, axis) in one entry) and `total` (the scaled sum of everything)."""
from ..primitive import structural, view
from . import dependence, shapes

def _one_value(ip, n_out, sizes):
    return None if n_out == 1 else f"has one output value, not {n_out}"


segsum = structural(38, "segsum", "SumBackward1", shapes.segments, linear=True,
                    reads_elements=dependence.segments,
                    doc="y[ip[i]] += c0 * x[i]")
total = structural(39, "total", "SumBackward0", _one_value, linear=True, doc="y = c0 * sum(x)",
                  reads_elements=dependence.every_operand)
# Rounded as the square and the segment sum it replaces: each product is formed, then added.
segsumsq = structural(49, "segsumsq", "SumBackward1", shapes.segments, reads=(((0,), False),),
                      reads_elements=dependence.segments, curvature="diagonal",
                      doc="y[ip[i]] += c0 * x[i]^2")


@segsum.fwd
def segsum_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * x[i]


@segsum.vjp
def segsum_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        for i in range(gx.size):
            gx[i] += c0 * gy[ip[i]]


@total.fwd
def total_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    acc = 0.0
    for i in range(x.size):
        acc += x[i]
    y[0] = c0 * acc


@total.vjp
def total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        g = c0 * gy[0]
        for i in range(gx.size):
            gx[i] += g


@total.rule("vjp_first", layout="flat")
def total_vjp_first(V, G, S, NEED, a, b, c, o, ip, c0, c1, first):
    """`total_vjp` for the reverse sweep that assigns first writes (see `core.codegen`): with
    bit 0 of `first` set, it assigns the operand's adjoint instead of adding to it."""
    if (first & 1) == 0:
        total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1)
        return
    gx = view(G, S, a)
    gy = view(G, S, o)
    g = c0 * gy[0]
    for i in range(gx.size):
        gx[i] = g


@segsumsq.fwd
def segsumsq_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * (x[i] * x[i])


@segsumsq.vjp
def segsumsq_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = view(V, S, a)
        gx = view(G, S, a)
        gy = view(G, S, o)
        for i in range(gx.size):
            gx[i] += (c0 * gy[ip[i]]) * (2.0 * x[i])


@segsumsq.jvp
def segsumsq_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    tx = view(T, S, a)
    ty = view(T, S, o)
    ty[:] = 0.0
    for i in range(x.size):
        ty[ip[i]] += c0 * ((2.0 * x[i]) * tx[i])


@segsumsq.vjp_jvp
def segsumsq_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = view(V, S, a)
        tx = view(T, S, a)
        gy = view(G, S, o)
        tgy = view(TG, S, o)
        tgx = view(TG, S, a)
        for i in range(x.size):
            tgx[i] += (c0 * tgy[ip[i]]) * (2.0 * x[i]) + (c0 * gy[ip[i]]) * 2.0 * tx[i]
