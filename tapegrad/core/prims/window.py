"""window: y[i] = x[start + i * step], ip = (start, step): basic slices of a flat buffer,
without gather's index map (and with a VJP that vectorises)."""
from ..primitive import structural, view
from . import dependence

def _inside(ip, n_out, sizes):
    """The window lies inside its operand."""
    if ip.size != 2:
        return f"needs a payload of 2 integers, got {ip.size}"
    start, step, n_in = int(ip[0]), int(ip[1]), int(sizes[0])
    last = start + (int(n_out) - 1) * step
    if n_out and not (0 <= start < n_in and 0 <= last < n_in):
        return f"({start}, {step}) of {n_out} values reads outside an operand of {n_in}"
    return None


window = structural(37, "window", "SliceBackward0", _inside, linear=True,
                    reads_elements=dependence.window)


@window.fwd
def window_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    start, step = ip[0], ip[1]
    for i in range(y.size):
        y[i] = x[start + i * step]


@window.vjp
def window_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        start, step = ip[0], ip[1]
        for i in range(gy.size):
            gx[start + i * step] += gy[i]


# An element read (x[i], one output element: most of the reads of a graph of scalars) runs inline
# in the flat sweeps (`core.codegen.scalar_path`): the same copy and addition as the loops above.
window.scalar.update(
    forward="V[o] = V[S[sa, 0] + IP[E[e, 5]]]\n",
    backward=("if NEED[so] and NEED[sa]:\n    read_at = S[sa, 0] + IP[E[e, 5]]\n"
              "    for d in range(G.shape[0]):\n        G[d, read_at] += G[d, o]\n"))
