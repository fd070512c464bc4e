"""sort: each lane of values along an axis in ascending order (descending with a flag), stable,
NaN last (first when descending, as the greatest value); ip = (L, inner, descending).

The operand and the output have one shape; a lane is the L values along the axis, `inner` (the
product of the axes after it) apart: lane l starts at (l // inner) * L * inner + l % inner. The
permutation depends on the values, so each replay computes it at every point: a tape never bakes
in the order it was traced with. It is computed by a sorting network (Batcher's odd-even merge
sort), whose comparisons sit at positions fixed by L alone: the indices are uniform, only the
swaps depend on values, so the rules are in the kernel language and every layout (flat, column,
CUDA) comes from them; in the column layout each comparison runs over the tile's points at once.
Positions past L of the network's power of two hold virtual +inf padding, and comparisons with
them are no-ops, so they are skipped. Ties are broken by position (a stable sort), so the
permutation is the one numpy's stable sort and JAX's sort give, and the gradient of a tied value
goes to the position the stable order puts it at (as in JAX; autograd and PyTorch agree where
their sorts are stable). The comparisons branch on values: the fused tier refuses the primitive.

Rules: the JVP carries the tangents through the network with the values; the VJP sorts once to
find the permutation (the position each rank came from), then sorts the (position, adjoint)
pairs by position, which sends each adjoint back where its value came from; the second order is
the VJP of the tangents of the adjoints (sort is piecewise linear).

Scratch: two rows per value (a copy of the keys and the positions that break ties)."""
from ..primitive import Values, helper, structural, temp, view
from . import dependence


def _lanes(ip, n_out, sizes):
    if ip.size != 3:
        return f"needs a payload of 3 integers, got {ip.size}"
    L, inner, descending = int(ip[0]), int(ip[1]), int(ip[2])
    if L < 1 or inner < 1 or descending not in (0, 1):
        return f"payload {tuple(int(v) for v in ip)} is not (lane length, inner, descending)"
    if sizes[0] != n_out or n_out % (L * inner):
        return f"lanes of {L} values {inner} apart do not tile an operand and output of {n_out}"
    return None


sort = structural(79, "sort", "SortBackward0", _lanes, reads=(((0,), False),),
                  scratch=lambda n_out: 2 * n_out, reads_elements=dependence.lanes,
                  curvature="linear")


@helper
def _after(u, v, i, j, descending):
    """Whether the value u at position i sorts after the value v at position j."""
    if descending:
        u, v = v, u
    return (u > v) | ((u == v) & (i > j)) | ((u != u) & ((v == v) | (i > j)))


@helper
def _network(key: Values, tie: Values, load: Values, base, step, L, descending, carry):
    """Sort the lane base, base + step, ... (L values) of `key` by (key, tie), swapping `tie`
    with it, and `load` too when `carry`: Batcher's odd-even merge sort, on the network's power
    of two n >= L, with the comparisons that reach past L skipped (see the module docstring)."""
    n = 1
    while n < L:
        n *= 2
    width = 1
    while width < n:
        k = width
        while k >= 1:
            j = k % width
            while j + k < n:
                for i in range(k):
                    lo = i + j
                    hi = lo + k
                    if hi < L and lo // (2 * width) == hi // (2 * width):
                        at_lo = base + lo * step
                        at_hi = base + hi * step
                        if _after(key[at_lo], key[at_hi], tie[at_lo], tie[at_hi], descending):
                            t = key[at_lo]
                            key[at_lo] = key[at_hi]
                            key[at_hi] = t
                            t = tie[at_lo]
                            tie[at_lo] = tie[at_hi]
                            tie[at_hi] = t
                            if carry:
                                t = load[at_lo]
                                load[at_lo] = load[at_hi]
                                load[at_hi] = t
                j += 2 * k
            k //= 2
        width *= 2


@helper
def _sort_lanes(key: Values, tie: Values, load: Values, L, inner, descending, carry):
    """`_network` on every lane of the layout (L, inner) (see the module docstring)."""
    for lane in range(key.size // L):
        base = (lane // inner) * (L * inner) + lane % inner
        _network(key, tie, load, base, inner, L, descending, carry)


@helper
def _keyed(x: Values, key: Values, tie: Values):
    """key = x, and tie the position of each value (which breaks ties: a stable sort)."""
    for i in range(key.size):
        key[i] = x[i]
        tie[i] = i


@sort.fwd
def sort_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    tie = temp(V, 0, y.size)
    _keyed(x, y, tie)
    _sort_lanes(y, tie, y, ip[0], ip[1], ip[2], False)


@sort.vjp
def sort_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    """gx[perm[r]] += gy[r], with the permutation found by sorting, then undone by sorting the
    positions it names (carrying the adjoints)."""
    if NEED[a]:
        x = view(V, S, a)
        gx = view(G, S, a)
        gy = view(G, S, o)
        n = gy.size
        key = temp(V, 0, n)
        tie = temp(V, n, n)
        _keyed(x, key, tie)
        _sort_lanes(key, tie, key, ip[0], ip[1], ip[2], False)
        for i in range(n):
            key[i] = gy[i]
        # by position (distinct: `key`, now the adjoints, is carried as the tie-breaker)
        _sort_lanes(tie, key, tie, ip[0], ip[1], 0, False)
        for i in range(n):
            gx[i] += key[i]


@sort.jvp
def sort_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    tx = view(T, S, a)
    ty = view(T, S, o)
    n = ty.size
    key = temp(V, 0, n)
    tie = temp(V, n, n)
    _keyed(x, key, tie)
    for i in range(n):
        ty[i] = tx[i]
    _sort_lanes(key, tie, ty, ip[0], ip[1], ip[2], True)


@sort.vjp_jvp
def sort_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    sort_vjp(V, TG, S, NEED, a, b, c, o, ip, c0, c1)      # piecewise linear
