"""Graph colorings that compress sparse derivatives, and the recovery of their entries.

Jacobians: a distance-1 coloring of the column intersection graph (columns adjacent when they
share a row: `J.T @ J`) lets one tangent direction per color, the sum of its columns' unit
vectors, give every column of that color at once (no two share a row); the same coloring of
the row intersection graph (`J @ J.T`) does it for reverse seeds. `jacobian_coloring` computes
both (where the graph is not too large) and keeps the one with fewer colors.

Hessians: a star coloring of the adjacency graph of the symmetric pattern (distance-1, and
every path on four vertices uses at least three colors) needs far fewer colors than a
distance-2 coloring (an arrow pattern takes 2) and still recovers each entry directly: for
H[i, j], either j is the only vertex of its color among row i's pattern, and H[i, j] is the
i-th element of the product along j's color, or i is the only one of its color in row j (the
symmetric entry). The greedy algorithm is Gebremedhin, Manne and Pothen's (SIAM Review 47,
2005, Algorithm 4.1); the vertices are taken in largest-first order.

The greedy loops are compiled with numba (`core.jit`; small functions that link no
interpreter), imported only by the first sparse transform.
"""
import numpy as np

from ..core.jit import jit

# a side whose intersection graph would hold more pairs than this is not colored, unless it
# is the only one
_MAX_GRAPH_PAIRS = 50_000_000


@jit
def _smallest_allowed(forbidden, v):
    c = 0
    while forbidden[c] == v:
        c += 1
    return c


@jit
def _greedy_distance1(indptr, indices, order):
    color = np.full(order.size, -1, np.int64)
    forbidden = np.full(order.size + 1, -1, np.int64)      # forbidden[c] == v: not for v
    for v in order:
        for k in range(indptr[v], indptr[v + 1]):
            w = indices[k]
            if w != v and color[w] >= 0:
                forbidden[color[w]] = v
        color[v] = _smallest_allowed(forbidden, v)
    return color


@jit
def _greedy_star(indptr, indices, order):
    n = order.size
    color = np.full(n, -1, np.int64)
    forbidden = np.full(n + 1, -1, np.int64)
    for v in order:
        for k in range(indptr[v], indptr[v + 1]):
            w = indices[k]
            if w == v:
                continue
            if color[w] >= 0:
                forbidden[color[w]] = v
            for kx in range(indptr[w], indptr[w + 1]):
                x = indices[kx]
                if x == w or x == v or color[x] < 0:
                    continue
                if color[w] < 0:
                    forbidden[color[x]] = v
                else:
                    for ky in range(indptr[x], indptr[x + 1]):
                        y = indices[ky]
                        if y != x and y != w and color[y] == color[w]:
                            forbidden[color[x]] = v
                            break
        color[v] = _smallest_allowed(forbidden, v)
    return color


def _largest_first(graph):
    degree = np.diff(graph.indptr)
    return np.argsort(-degree, kind="stable").astype(np.int64)


def distance1_coloring(graph):
    """Colors (0 ..) of a greedy distance-1 coloring of a symmetric CSR `graph`."""
    return _greedy_distance1(graph.indptr.astype(np.int64), graph.indices.astype(np.int64),
                             _largest_first(graph))


def star_coloring(graph):
    """Colors (0 ..) of a greedy star coloring of a symmetric CSR `graph`."""
    return _greedy_star(graph.indptr.astype(np.int64), graph.indices.astype(np.int64),
                        _largest_first(graph))


def jacobian_coloring(J, mode=None):
    """("fwd", column colors) or ("rev", row colors) for the pattern J (CSR), whichever needs
    fewer colors (forward on a tie); `mode` "fwd" or "rev" imposes the side."""
    J = J.tocsr()
    JT = J.T.tocsr()
    cost = {"fwd": int((np.diff(J.indptr) ** 2).sum()),       # pairs in J.T @ J
            "rev": int((np.diff(JT.indptr) ** 2).sum())}      # pairs in J @ J.T
    sides = [mode] if mode is not None else [s for s in ("fwd", "rev")
                                              if cost[s] <= _MAX_GRAPH_PAIRS]
    if not sides:
        sides = [min(cost, key=cost.get)]
    best = None
    for side in sides:
        M = J if side == "fwd" else JT           # colors the columns of M
        colors = distance1_coloring((M.T @ M).tocsr().astype(bool))
        if best is None or colors.max(initial=-1) < best[1].max(initial=-1):
            best = (side, colors)
    return best


def seeds(colors):
    """The (colors, n) 0/1 seed matrix of a coloring: row c sums the unit vectors of color c."""
    n_colors = int(colors.max(initial=-1)) + 1
    S = np.zeros((n_colors, colors.size))
    S[colors, np.arange(colors.size)] = 1.0
    return S


def star_recovery(H, colors):
    """For each stored entry (i, j) of the symmetric CSR pattern H, in order: (color, row) of
    the element of the compressed product B = H @ seeds(colors).T that holds it, as B[row,
    color]: (colors[j], i) where j is the only one of its color in row i, else (colors[i], j)."""
    n = H.shape[0]
    n_colors = int(colors.max(initial=-1)) + 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(H.indptr))
    cols = H.indices.astype(np.int64)
    count = np.bincount(rows * n_colors + colors[cols], minlength=n * n_colors)
    direct = count[rows * n_colors + colors[cols]] == 1
    if not (count[cols * n_colors + colors[rows]][~direct] == 1).all():
        raise RuntimeError("the coloring is not a star coloring of the pattern")
    return (np.where(direct, colors[cols], colors[rows]), np.where(direct, rows, cols))
