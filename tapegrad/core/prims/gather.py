"""gather: y[i] = x[ip[i]], an index map (broadcasts, transposes, integer-array indexing);
the VJP scatters with accumulation, so repeated indices add up."""
from ..primitive import structural, view
from . import dependence, shapes

gather = structural(36, "gather", "IndexBackward0", shapes.index_map(1), linear=True,
                    reads_elements=dependence.index_map)


@gather.fwd
def gather_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    for i in range(y.size):
        y[i] = x[ip[i]]


@gather.vjp
def gather_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        for i in range(gy.size):
            gx[ip[i]] += gy[i]
