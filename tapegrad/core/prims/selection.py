"""Selection and assembly: `where` (y = b if a else c, elementwise) and `pack` (the flat
concatenation of any number of operands, listed in the payload: cat, stack)."""
from ..primitive import structural, view
from . import dependence, shapes


def _adds_up(ip, n_out, sizes):
    return None if sum(int(n) for n in sizes) == n_out else \
        f"operands do not add up to the output's {n_out} values"


where = structural(45, "where", "WhereBackward0", shapes.same_size, arity=3,
                   reads=((), ((0,), False), ((0,), False)),
                   reads_elements=dependence.selection,
                   curvature="linear")
pack = structural(44, "pack", "CatBackward0", _adds_up, arity=0, variadic=True, linear=True,
                  reads_elements=dependence.concatenation, inline=True)


@where.fwd
def where_fwd(V, S, a, b, c, o, ip, c0, c1):
    cond = view(V, S, a)
    x = view(V, S, b)
    z = view(V, S, c)
    y = view(V, S, o)
    for i in range(y.size):
        y[i] = x[i] if cond[i] != 0.0 else z[i]


@where.vjp
def where_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    cond = view(V, S, a)
    gy = view(G, S, o)
    if NEED[b]:
        gx = view(G, S, b)
        for i in range(gy.size):
            if cond[i] != 0.0:
                gx[i] += gy[i]
    if NEED[c]:
        gz = view(G, S, c)
        for i in range(gy.size):
            if cond[i] == 0.0:
                gz[i] += gy[i]


@where.jvp
def where_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    cond = view(V, S, a)
    tx = view(T, S, b)
    tz = view(T, S, c)
    ty = view(T, S, o)
    for i in range(ty.size):
        ty[i] = tx[i] if cond[i] != 0.0 else tz[i]


@where.vjp_jvp
def where_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    where_vjp(V, TG, S, NEED, a, b, c, o, ip, c0, c1)     # linear in b and c


@pack.fwd
def pack_fwd(V, S, a, b, c, o, ip, c0, c1):
    y = view(V, S, o)
    start = 0
    for j in range(ip.size):
        x = view(V, S, ip[j])
        for i in range(x.size):
            y[start + i] = x[i]
        start += x.size


@pack.vjp
def pack_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    gy = view(G, S, o)
    start = 0
    for j in range(ip.size):
        n = S[ip[j], 1]         # from the slot table: an operand without adjoint (a constant)
        if NEED[ip[j]]:         # may lie beyond the adjoint buffer, where its view is empty
            gx = view(G, S, ip[j])
            for i in range(n):
                gx[i] += gy[start + i]
        start += n
