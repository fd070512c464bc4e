"""The batched replay's layout (`_columns`): step-1 windows and copies replayed as views.

Each case is checked against a loop of the unbatched transform (as in test_vmap) for every
sweep the tile driver runs, on functions where aliases chain, overlap inside one entry, are
outputs, read constants or sit under guards; and the layout itself: which entries it drops,
that every slot stays inside the packed buffer, and that strided windows stay copies.
"""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.batch import columns as _columns
from tapegrad.core.registry import PRIMS

from conftest import rng_for
from test_vmap import check

C = np.linspace(0.5, 2.0, 6)


def rosenbrock(x):
    return tg.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def chained(x):                      # a window of a reshape of a window, and a selection
    y = tg.reshape(x[1:5], (2, 2))
    return tg.sum(tg.sin(y[1]) * y[0]) + x[0] * tg.sum(x[2:4] * x[3:5])


def with_constant(x):                # windows of a constant next to windows of the input
    c = tg.Tensor(C)
    return tg.sum(c[1:] * x[:-1] ** 2) + tg.sum(c[:3]) * x[5]


def piecewise(x):                    # a guard on a window's value
    return tg.sum(x[1:] ** 2) if x[1] > 0 else tg.sum(tg.cos(x[:-1]))


def vector_out(x):                   # an output that is a view
    return x[1:4]


FUNCTIONS = [rosenbrock, chained, with_constant, piecewise]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("transform", ["value", "grad", "jacfwd", "jacrev", "hessian"])
def test_aliases_through_every_sweep(fn, transform):
    X = rng_for(f"columns {fn.__name__}").uniform(-1.5, 1.5, (37, 6))
    check(fn if transform == "value" else getattr(tg, transform)(fn), X)


@pytest.mark.parametrize("transform", ["value", "jacfwd", "jacrev"])
def test_an_output_that_is_a_view(transform):
    X = rng_for("columns view out").standard_normal((29, 6))
    check(vector_out if transform == "value" else getattr(tg, transform)(vector_out), X)


def test_jvp_through_aliases():
    from functools import partial
    rng = rng_for("columns jvp")
    X, T = rng.standard_normal((23, 6)), rng.standard_normal((23, 6))
    check(partial(tg.jvp, chained), (X,), (T,))


def _layout(fn, x):
    tape = tg.trace(fn, x)
    return tape, _columns.layout(tape)


def test_the_layout_drops_copies_and_packs_the_rest():
    tape, cols = _layout(rosenbrock, np.ones(10))
    names = [PRIMS[op].name for op in cols.E[:, 0]]
    assert "window" not in names and len(cols.E) == len(tape.E) - 3
    sizes = cols.S[:, 1]
    assert cols.rows.size == tape.V0.size - 27        # three windows of 9 rows
    assert ((cols.S[:, 0] >= 0) & (cols.S[:, 0] + sizes <= cols.rows.size)).all()
    np.testing.assert_array_equal(cols.values(tape.V0)[cols.positions(np.arange(tape.V0.size))],
                                  tape.V0)            # every row readable where it moved
    assert _columns.layout(tape) is cols              # cached per tape


def test_strided_and_broadcast_windows_stay_copies():
    tape, cols = _layout(lambda x: tg.sum(x[::2] * x[1::2]), np.ones(6))
    assert len(cols.E) == len(tape.E) and cols.rows.size == tape.V0.size


def test_a_self_product_is_replayed_as_a_square():
    tape, cols = _layout(lambda x: tg.sum(x * x * x[0]), np.ones(3))
    names = [PRIMS[op].name for op in cols.E[:, 0]]
    assert names.count("square") == 1 and names.count("mul") == 1
    assert [p.name for p in tape.prims].count("mul") == 2      # the tape keeps its entries
    X = rng_for("columns self product").standard_normal((21, 3))
    for transform in (tg.grad, tg.hessian, tg.jacfwd):
        check(transform(lambda x: tg.sum(x * x * x[0])), X)


def scaled_sums(x):                  # c * e read by sums only: folded into their scale
    e = tg.sin(x) * x[0]
    rows = tg.sum(3.0 * tg.reshape(e, (2, 3)), 1)
    return tg.sum(4.0 * (rows * rows)) + tg.mean(-0.5 * e)


def kept_multiples(x):               # a multiple read twice, and one that is an output
    m = 2.0 * x
    return tg.sum(m) * m[0], 5.0 * x


def test_constant_multiples_fold_into_sums():
    tape, cols = _layout(scaled_sums, np.ones(6))
    names = [PRIMS[op].name for op in cols.E[:, 0]]
    assert "mul_const" not in names and [p.name for p in tape.prims].count("mul_const") == 3
    X = rng_for("columns scaled sums").standard_normal((19, 6))
    for transform in (tg.grad, tg.hessian, tg.jacfwd, tg.jacrev):
        check(transform(scaled_sums), X)
    tape, cols = _layout(kept_multiples, np.ones(6))
    assert [PRIMS[op].name for op in cols.E[:, 0]].count("mul_const") == 2
    check(kept_multiples, X)
    check(tg.jacrev(lambda x: kept_multiples(x)[0]), X)
