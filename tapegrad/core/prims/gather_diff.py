"""gather_diff: y[i] = x[ip[i]] - x[ip[n + i]], pair differences x[I] - x[J] in one entry
(distances, forces): one pass over the pairs instead of three, each way. Recorded by `sub` when
both operands are gathers of one tensor."""
from ..primitive import structural, view
from . import dependence, shapes

gather_diff = structural(48, "gather_diff", "SubBackward0", shapes.index_map(2),
                         linear=True, reads_elements=dependence.index_map)


@gather_diff.fwd
def gather_diff_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    n = y.size
    for i in range(n):
        y[i] = x[ip[i]] - x[ip[n + i]]


@gather_diff.vjp
def gather_diff_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        n = gy.size
        for i in range(n):
            gx[ip[i]] += gy[i]
            gx[ip[n + i]] -= gy[i]
