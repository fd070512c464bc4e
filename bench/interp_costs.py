"""Where the flat interpreter's time per tape entry goes, on the tape of the FAW workload.

    python bench/interp_costs.py [--n 10000] [--number 20] [--repeat 7]

Measurements (each the minimum over `repeat` runs of `number` sweeps, in ns per entry, the
variants of one table timed in the same process one after the other):
1. The whole tape of bench/faw.py's graph: forward, backward_first (grad's reverse sweep) and
   backward, and the full `value_and_grad` call; forward and backward_first again over the
   arrays the transforms sweep (`Tape._aliased`: the element reads as aliases), per entry of
   the tape as recorded, so that the rows compare.
2. The same interpreters over the entries of one primitive only (the rows of the tape with that
   opcode, kept in order; the value buffer is the traced one): the cost of each kind of entry
   (`backward_first` with those entries' first writes, nothing zeroed).
3. grad's sweeps of that tape as programs (`core.programs`, over the aliased arrays): the whole
   program forward and backward, then its one-element rows (value offsets resolved) and the
   rows of each other primitive (run by its kernels) on their own, ns per program row.
4. Mini-interpreters of the `mul` entries of that tape, compiled here, each a loop over the
   same rows (E, FC, IP, S as the tape has them) that differs from the generated code in one
   respect, to price each part of an entry:
   * generated: the generated loop (the row's fields read, `ip = IP[...]` sliced, `c0, c1`
     read) calling the generated kernel body (views of V by `S`, broadcast factors, a loop over
     the output's size), with one opcode in the chain instead of every primitive's;
   * no ip slice: the same without the `IP` slice and the `FC` reads;
   * scalar kernel: the kernel indexes V at the slot offsets (no views, no loop): the scalar
     fast path a size-1 entry could take;
   * offsets in E: operands given as value offsets in the entry (no `S` lookups): the
     hand-written interpreter's form.
   and the same for the reverse rule (`mul_vjp`, with its NEED tests).
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402,F401  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

import faw  # noqa: E402


def best_ns(fn, n_entries, number, repeat):
    """Minimum over `repeat` runs of `number` calls, in ns per entry."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e9 / max(n_entries, 1)


def read_only(a):
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


# ---- mini-interpreters of mul entries --------------------------------------------------------------

def mini_kernels():
    import numba
    jit = numba.njit(error_model="numpy", cache=True)

    @jit
    def mul_fwd(V, S, sa, sb, sc, so, ip, c0, c1):          # as generated
        A = V[S[sa, 0]:S[sa, 0] + S[sa, 1]]
        B = V[S[sb, 0]:S[sb, 0] + S[sb, 1]]
        Y = V[S[so, 0]:S[so, 0] + S[so, 1]]
        ka = 1 if A.size == Y.size else 0
        kb = 1 if B.size == Y.size else 0
        for i in range(Y.size):
            a = A[i * ka]
            b = B[i * kb]
            Y[i] = a * b

    @jit
    def mul_vjp(V, G, S, NEED, sa, sb, sc, so, ip, c0, c1):  # as generated
        A = V[S[sa, 0]:S[sa, 0] + S[sa, 1]]
        B = V[S[sb, 0]:S[sb, 0] + S[sb, 1]]
        Y = V[S[so, 0]:S[so, 0] + S[so, 1]]
        ka = 1 if A.size == Y.size else 0
        kb = 1 if B.size == Y.size else 0
        GY = G[S[so, 0]:S[so, 0] + S[so, 1]]
        if NEED[sa]:
            GA = G[S[sa, 0]:S[sa, 0] + S[sa, 1]]
            for i in range(Y.size):
                GA[i * ka] += GY[i] * B[i * kb]
        if NEED[sb]:
            GB = G[S[sb, 0]:S[sb, 0] + S[sb, 1]]
            for i in range(Y.size):
                GB[i * kb] += GY[i] * A[i * ka]

    @jit
    def forward_generated(E, FC, IP, S, V, start, stop):
        for e in range(start, stop):
            op = E[e, 0]
            sa, sb, sc, so = E[e, 1], E[e, 2], E[e, 3], E[e, 4]
            ip = IP[E[e, 5]:E[e, 5] + E[e, 6]]
            c0 = FC[e, 0]
            c1 = FC[e, 1]
            if op >= 0:
                mul_fwd(V, S, sa, sb, sc, so, ip, c0, c1)

    @jit
    def forward_no_ip(E, FC, IP, S, V, start, stop):
        for e in range(start, stop):
            op = E[e, 0]
            sa, sb, sc, so = E[e, 1], E[e, 2], E[e, 3], E[e, 4]
            if op >= 0:
                mul_fwd(V, S, sa, sb, sc, so, IP, 0.0, 0.0)

    @jit
    def forward_scalar(E, FC, IP, S, V, start, stop):
        for e in range(start, stop):
            op = E[e, 0]
            if op >= 0:
                V[S[E[e, 4], 0]] = V[S[E[e, 1], 0]] * V[S[E[e, 2], 0]]

    @jit
    def forward_offsets(E, FC, IP, S, V, start, stop):
        for e in range(start, stop):
            op = E[e, 0]
            if op >= 0:
                V[E[e, 4]] = V[E[e, 1]] * V[E[e, 2]]

    @jit
    def backward_generated(E, FC, IP, S, NEED, V, G, start, stop):
        for e in range(stop - 1, start - 1, -1):
            op = E[e, 0]
            sa, sb, sc, so = E[e, 1], E[e, 2], E[e, 3], E[e, 4]
            ip = IP[E[e, 5]:E[e, 5] + E[e, 6]]
            c0 = FC[e, 0]
            c1 = FC[e, 1]
            if op >= 0:
                if NEED[so]:
                    for d in range(G.shape[0]):
                        mul_vjp(V, G[d], S, NEED, sa, sb, sc, so, ip, c0, c1)

    @jit
    def backward_scalar(E, FC, IP, S, NEED, V, G, start, stop):
        for e in range(stop - 1, start - 1, -1):
            op = E[e, 0]
            sa, sb, so = E[e, 1], E[e, 2], E[e, 4]
            if op >= 0 and NEED[so]:
                a, b, o = S[sa, 0], S[sb, 0], S[so, 0]
                for d in range(G.shape[0]):
                    g = G[d, o]
                    if NEED[sa]:
                        G[d, a] += g * V[b]
                    if NEED[sb]:
                        G[d, b] += g * V[a]

    @jit
    def backward_offsets(E, FC, IP, S, NEED, V, G, start, stop):
        for e in range(stop - 1, start - 1, -1):
            a, b, o = E[e, 1], E[e, 2], E[e, 4]
            g = G[0, o]
            G[0, a] += g * V[b]
            G[0, b] += g * V[a]

    return {"forward": {"generated": forward_generated, "no ip slice": forward_no_ip,
                        "scalar kernel": forward_scalar, "offsets in E": forward_offsets},
            "backward": {"generated": backward_generated, "scalar kernel": backward_scalar,
                         "offsets in E": backward_offsets}}


# ---- programs ------------------------------------------------------------------------------------

def program_costs(tape, A, V, number, repeat):
    """Section 3: the program sweeps over the aliased arrays `A`, whole and by kind of row."""
    from tapegrad.core import programs
    from tapegrad.core.interp import program_sweeps
    from tapegrad.core.registry import OPCODE, PRIMS
    m = program_sweeps()
    n_adj = tape.n_adjoint
    seed = tape.offsets[tape.output_slots[0]]
    fused = programs.fusible(A, tape._read_by_offset())
    forward_rows, K_f = programs.rows(A.E, A.S, IP=A.IP, fused=fused)
    reverse_rows, K_b = programs.rows(A.E, A.S, A.NEED, sink=n_adj, IP=A.IP, fused=fused)
    G = np.empty((1, n_adj + 1))

    def costs(P_f, P_b):
        f = best_ns(lambda: m.forward(P_f, K_f, A.E, A.FC, A.IP, A.S, V), len(P_f), number,
                    repeat)
        b = best_ns(lambda: m.backward(P_b, K_b, A.E, A.FC, A.IP, A.S, A.NEED, V, G, seed),
                    len(P_b), number, repeat)
        return f, b

    print(f"\nprograms (grad's sweeps of this tape, `core.programs`): {len(forward_rows):,} "
          f"forward rows, {len(reverse_rows):,} reverse rows; ns per row (the reverse sweep "
          "zeroes the adjoints at every call)")
    print(f"  {'rows':24s} {'count':>7s} {'forward':>8s} {'reverse':>8s}")
    pack = OPCODE["pack"]
    kinds = [("all", lambda P: np.ones(len(P), bool)),
             ("one-element (resolved)", lambda P: (P[:, 0] >= 0) & (A.E[P[:, 1], 0] != pack)),
             ("packs' copy rows", lambda P: (P[:, 0] >= 0) & (A.E[P[:, 1], 0] == pack)),
             ("gathered (a pack's reader)", lambda P: P[:, 0] == -2)]
    general_ops = np.unique(A.E[forward_rows[forward_rows[:, 0] == -1, 1], 0])
    kinds += [(f"{PRIMS[op].name} (kernels)",
               lambda P, op=op: (P[:, 0] == -1) & (A.E[P[:, 1], 0] == op)) for op in general_ops]
    for label, select in kinds:
        P_f = read_only(forward_rows[select(forward_rows)])
        P_b = read_only(reverse_rows[select(reverse_rows)])
        if len(P_f) < 100:      # a call and the zeroing would be most of the time
            print(f"  {label:24s} {len(P_f):7,d}  (too few to time per row)")
            continue
        f, b = costs(P_f, P_b)
        print(f"  {label:24s} {len(P_f):7,d} {f:8.1f} {b:8.1f}", flush=True)


# ---- main ----------------------------------------------------------------------------------------

def options():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="graph operations (default 10000)")
    parser.add_argument("--number", type=int, default=20, help="sweeps per timed run")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs (the minimum is kept)")
    return parser.parse_args()


def main():
    args = options()
    import tapegrad as tg
    from tapegrad.core.interp import interpreters, reverse_first
    from tapegrad.core.registry import PRIMS
    from tapegrad.core.sweep import _first_writes
    print(f"interpreter costs, FAW N={args.n:,}; {C.load_note()}", flush=True)
    f = faw.numpy_function(args.n)
    x0 = faw.start_point()
    tape = tg.trace(f, x0)
    m, first = interpreters(), reverse_first()
    E, FC, IP, S, NEED = tape.E, tape.FC, tape.IP, tape.S, tape.NEED
    V = tape.V0.copy()
    n = len(E)
    out = tape.output_slots[0]
    FIRST, ZERO = _first_writes(tape, out)
    G = np.zeros((1, tape.n_adjoint))
    vg = tg.value_and_grad(f)
    num, rep = args.number, args.repeat

    def fwd(E_, FC_):
        return lambda: m.forward(E_, FC_, IP, S, V, 0, len(E_))

    def bwd(E_, FC_):
        return lambda: m.backward(E_, FC_, IP, S, NEED, V, G, 0, len(E_))

    A, _ = tape._aliased(False)         # the transforms' arrays: copies as aliases
    A_FIRST, A_ZERO = _first_writes(A, out)
    rows = [("value_and_grad call", best_ns(lambda: vg(x0), n, num, rep)),
            ("forward", best_ns(fwd(E, FC), n, num, rep)),
            ("backward_first (grad's)", best_ns(
                lambda: first.backward_first(E, FC, IP, S, NEED, FIRST, ZERO, V, G, 0, n),
                n, num, rep)),
            ("backward", best_ns(bwd(E, FC), n, num, rep)),
            ("forward, copies as aliases", best_ns(
                lambda: m.forward(A.E, A.FC, IP, A.S, V, 0, len(A.E)), n, num, rep)),
            ("backward_first, aliases", best_ns(
                lambda: first.backward_first(A.E, A.FC, IP, A.S, A.NEED, A_FIRST, A_ZERO, V, G,
                                             0, len(A.E)), n, num, rep))]
    print(f"\nwhole tape: {n:,} entries ({len(A.E):,} with copies as aliases, which the "
          "transforms sweep), ns per entry of the tape")
    for label, ns in rows:
        print(f"  {label:28s} {ns:8.1f}")
    needed = int(np.sum(NEED[E[:, 4]] != 0))
    print(f"  ({needed:,} entries' outputs need an adjoint; the reverse sweeps skip the others)")

    program_costs(tape, A, V, num, rep)

    print("\none primitive at a time (that primitive's rows only), ns per entry")
    print(f"  {'primitive':12s} {'entries':>8s} {'forward':>8s} {'backward':>9s} "
          f"{'backward_first':>15s}  operand sizes")
    ops = E[:, 0]
    no_zero = ZERO[:0].copy()

    def bwd_first(E_, FC_, FIRST_):   # the entries' own first writes, nothing zeroed
        return lambda: first.backward_first(E_, FC_, IP, S, NEED, FIRST_, no_zero, V, G, 0,
                                            len(E_))
    for op in np.unique(ops):
        rows_op = np.flatnonzero(ops == op)
        E_, FC_ = read_only(E[rows_op]), read_only(FC[rows_op])
        FIRST_ = np.ascontiguousarray(FIRST[rows_op])     # writable, as the sweeps get it
        sizes = sorted({int(S[E[r, 4], 1]) for r in rows_op[:50]})
        k = len(rows_op)
        print(f"  {PRIMS[op].name:12s} {k:8,d} {best_ns(fwd(E_, FC_), k, num, rep):8.1f} "
              f"{best_ns(bwd(E_, FC_), k, num, rep):9.1f} "
              f"{best_ns(bwd_first(E_, FC_, FIRST_), k, num, rep):15.1f}  output sizes {sizes}",
              flush=True)

    rows_mul = np.flatnonzero(ops == PRIMS.index(next(p for p in PRIMS if p.name == "mul")))
    E_mul, FC_mul = read_only(E[rows_mul]), read_only(FC[rows_mul])
    E_off = E_mul.copy()                                # operands as value offsets
    for col in (1, 2, 4):
        E_off[:, col] = S[E_mul[:, col], 0]
    E_off = read_only(E_off)
    kernels = mini_kernels()
    k = len(rows_mul)
    print(f"\nmini-interpreters of the {k:,} mul entries (one opcode), ns per entry")
    print("  forward:")
    for label, fn in kernels["forward"].items():
        E_ = E_off if label == "offsets in E" else E_mul
        print(f"    {label:16s} {best_ns(lambda: fn(E_, FC_mul, IP, S, V, 0, k), k, num, rep):7.1f}")
    print(f"    {'tapegrad forward':16s} {best_ns(fwd(E_mul, FC_mul), k, num, rep):7.1f}")
    print("  backward:")
    for label, fn in kernels["backward"].items():
        E_ = E_off if label == "offsets in E" else E_mul
        print(f"    {label:16s} "
              f"{best_ns(lambda: fn(E_, FC_mul, IP, S, NEED, V, G, 0, k), k, num, rep):7.1f}")
    print(f"    {'tapegrad backward':16s} {best_ns(bwd(E_mul, FC_mul), k, num, rep):7.1f}")
    hand = faw.hand_case(args.n)
    n_graph_entries = args.n + faw.N_INPUTS
    print(f"\nhand-written FAW interpreter (bench/faw.py), forward+backward: "
          f"{best_ns(lambda: hand(x0), args.n, num, rep):.1f} ns per graph op "
          f"({n_graph_entries:,} nodes)")
    print(f"load at the end: {C.load_note()}")


if __name__ == "__main__":
    sys.exit(main())
