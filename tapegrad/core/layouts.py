"""Kernel layouts: a rule written once, for one point, turned into the code of every layout.

The interpreters replay a tape in three memory layouts, and each needs its own loops:

* flat (`layout="flat"`): the per-point CPU interpreters. A slot is a 1-d run of the buffer.
* column (`"column"`): the batched CPU interpreters. A buffer is (rows, tile): a slot is a block
  of rows, each row holding one value at every point of the tile, and each statement that
  touches values runs in an innermost loop over the tile's points, which LLVM vectorises.
* CUDA (`"cuda"`): one GPU thread per point, whose buffers are strided columns of (rows,
  points) arrays in global memory; device code may not allocate.

Every primitive's rules are written once in the *kernel language*, as plain Python for one
point, and `source(fn, layout, name)` writes the function for a layout. The rules of the
language, checked here (a body outside them is refused with the reason, never miscompiled):

1. Values are reached through views: `view(B, S, s)` is slot s of buffer B (the parameters V,
   G, T, TG are buffers); `temp(V, offset, n)` is n rows of per-point scratch (the primitive's
   `scratch` rule declares how many, so the GPU can reserve them at the end of a thread's value
   column); a slice of a view is a view; a helper parameter that receives a view is annotated
   `: Values`.
2. Everything that decides an index, a slice or a loop bound is *uniform*: the same at every
   point (payload `ip`, slot table `S`, sizes, constants). A value never indexes or bounds.
3. A statement that reads or writes an element of a view, or reads a per-point scalar (a name
   assigned from values), is a *point statement*; a maximal run of them becomes one loop over
   the tile's points in the column layout, each element access `x[k]` a row access `row[p]`
   with `row = x[k]` taken once before the loop. A per-point scalar that lives across runs
   (an accumulator carried through a loop) becomes a row of its own there, one float64 value
   per point; in the flat and CUDA layouts it stays a register (which numba types float64
   when it starts from a float literal, as accumulators do).
4. A point statement contains no loop: `if` on values is fine, a loop inside it is not.
5. Values are copied element by element; a view may be filled with a uniform scalar
   (`y[:] = 0.0`), never assigned another view. No allocation and no numpy calls on values in
   portable rules: a primitive that needs BLAS overrides a layout's rule (matmul).
6. Helpers (`@helper`) are array helpers, called as statements with views, returning nothing
   or a uniform value, or scalar helpers, called inside expressions with scalars only.

The rewritten function is returned as source text; `core.codegen` puts it in the generated
interpreter module, whose file name is a hash of its text, so a change of any rule compiles
afresh.
"""
import ast
import copy
import inspect
import textwrap

from .primitive import Values

BUFFERS = frozenset(("V", "G", "T", "TG"))
_CONSTANTS = frozenset(("inf", "nan", "pi", "e"))     # np.inf, math.pi ...: uniform constants


class KernelError(Exception):
    """A kernel body outside the kernel language (see the module docstring)."""


# ---- parsing and the helpers a body calls ------------------------------------------------------

class Body:
    """A kernel body: its syntax tree and what the rewriting needs to know about it."""

    def __init__(self, fn=None, text=None, name=None):
        if fn is not None:
            text = inspect.getsource(fn)
            self.globals, self.name = fn.__globals__, fn.__qualname__
            self.firstline = fn.__code__.co_firstlineno
            self.value_params = {n for n, ann in getattr(fn, "__annotations__", {}).items()
                                 if ann is Values and n != "return"}
            self.helper = getattr(fn, "kernel_helper", False)
            self.layout = getattr(fn, "kernel_layout", None)
        else:                   # a template of core.codegen: no helpers, no annotations
            self.globals, self.name, self.firstline = {}, name, 1
            self.value_params, self.helper, self.layout = set(), False, None
        tree = ast.parse(textwrap.dedent(text))
        fdef = tree.body[0]
        if not isinstance(fdef, ast.FunctionDef):
            raise KernelError(f"{self.name}: not a function definition")
        fdef.decorator_list = []
        fdef.returns = None
        body = fdef.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            fdef.body = body[1:] or [ast.Pass()]
        self.fdef = fdef

    def callee(self, name):
        """The kernel helper a call of `name` reaches, or None."""
        target = self.globals.get(name)
        return target if getattr(target, "kernel_helper", False) else None


def _parse(fn):
    return Body(fn).fdef


def helpers_of(fn, seen=None):
    """The kernel helpers `fn` calls, transitively, callees first (each once)."""
    seen = [] if seen is None else seen
    for node in ast.walk(_parse(fn)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            target = fn.__globals__.get(node.func.id)
            if getattr(target, "kernel_helper", False) and target not in seen:
                helpers_of(target, seen)
                seen.append(target)
    return seen


def helper_name(fn):
    """The name a helper gets in generated code: module and function, so families don't clash."""
    return f"{fn.__module__.rsplit('.', 1)[-1]}__{fn.__name__.lstrip('_')}"


def is_scalar_helper(fn):
    """A helper without view parameters: pure scalar code, the same in every layout."""
    return not Body(fn).value_params


# ---- the rewriting common to every layout -----------------------------------------------------

class _Names(ast.NodeTransformer):
    """Helper calls renamed to their generated names; views and temps rewritten per layout."""

    def __init__(self, body, layout):
        self.body, self.layout = body, layout

    def visit_Call(self, node):
        self.generic_visit(node)
        if not isinstance(node.func, ast.Name):
            return node
        name = node.func.id
        target = self.body.callee(name)
        if target is not None:
            node.func = ast.Name(helper_name(target), ast.Load())
            return node
        if name == "view":
            buffer, S, s = node.args
            lo = _sub(S, s, 0)
            return ast.Subscript(buffer, ast.Slice(lo, ast.BinOp(copy.deepcopy(lo), ast.Add(),
                                                                 _sub(S, s, 1))), ast.Load())
        if name == "temp":
            buffer, offset, n = node.args
            if not (isinstance(buffer, ast.Name) and buffer.id == "V"):
                raise KernelError(f"{self.body.name}: temp() takes the value buffer V")
            return self._temp(buffer, offset, n)
        return node

    def _temp(self, V, offset, n):
        if self.layout == "cuda":     # scratch rows at the end of the thread's value column
            end = ast.parse("V.shape[0]", mode="eval").body
            stop = ast.BinOp(end, ast.Sub(), offset)
            start = ast.BinOp(copy.deepcopy(stop), ast.Sub(), n)
            return ast.Subscript(V, ast.Slice(start, stop), ast.Load())
        shape = n if self.layout == "flat" else ast.Tuple(
            [n, ast.parse("V.shape[1]", mode="eval").body], ast.Load())
        return ast.Call(ast.parse("np.empty", mode="eval").body,
                        [shape, ast.parse("V.dtype", mode="eval").body], [])


def _sub(S, s, column):
    return ast.Subscript(copy.deepcopy(S), ast.Tuple([copy.deepcopy(s), ast.Constant(column)],
                                                     ast.Load()), ast.Load())


def _is_slice(index):
    return isinstance(index, ast.Slice) or (
        isinstance(index, ast.Tuple) and any(isinstance(e, ast.Slice) for e in index.elts))


def _base(node):
    while isinstance(node, ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _Scope:
    """What the names of one function are: views of values, per-point scalars, or uniform."""

    def __init__(self, body, params_are_views):
        self.body = body
        self.views = set(params_are_views)
        self.point = set()        # per-point scalars (assigned from values somewhere)

    def fail(self, node, message):
        line = getattr(node, "lineno", 1) + self.body.firstline - 1
        raise KernelError(f"{self.body.name} (line {line}): {message}")

    def makes_view(self, value):
        """Whether an assigned expression is a view: view(), temp(), a slice of a view."""
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
                value.func.id in ("view", "temp"):
            return True
        return isinstance(value, ast.Subscript) and _base(value) in self.views and \
            _is_slice(value.slice)

    def element(self, node):
        """Whether `node` is an element access of a view (x[k], k not a slice)."""
        return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
            node.value.id in self.views and not _is_slice(node.slice)

    def is_point(self, node):
        """Whether the code `node` reads an element of a view or a per-point scalar."""
        for n in ast.walk(node):
            if self.element(n):
                return True
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in self.point:
                return True
        return False


def _targets(stmt):
    if isinstance(stmt, ast.Assign):
        return stmt.targets
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        return [stmt.target]
    return []


def _names_in(targets):
    out = []
    for t in targets:
        if isinstance(t, ast.Name):
            out.append(t.id)
        elif isinstance(t, ast.Tuple):
            out += _names_in(t.elts)
    return out


def _find_views_and_points(scope, body):
    """Fill scope.views and scope.point: views are names bound to views; per-point scalars are
    names some statement assigns from values (to a fixpoint: a name assigned from a per-point
    scalar is one too)."""
    changed = True
    while changed:                  # a slice of a view is a view: to a fixpoint
        changed = False
        for node in ast.walk(ast.Module(body, [])):
            if isinstance(node, ast.Assign) and scope.makes_view(node.value):
                names = set(_names_in(node.targets))
                if not names <= scope.views:
                    scope.views |= names
                    changed = True
    changed = True
    while changed:
        changed = False
        for node in ast.walk(ast.Module(body, [])):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and \
                    node.value is not None and not scope.makes_view(node.value):
                names = _names_in(_targets(node))
                if (scope.is_point(node.value) or
                        (isinstance(node, ast.AugAssign) and scope.is_point(node.target))) and \
                        not set(names) <= scope.point:
                    scope.point |= set(names)
                    changed = True
            elif isinstance(node, (ast.For, ast.If, ast.While)):
                # names assigned under a per-point condition are per-point
                test = node.test if not isinstance(node, ast.For) else node.iter
                if scope.is_point(test):
                    for inner in ast.walk(ast.Module(node.body + node.orelse, [])):
                        names = set(_names_in(_targets(inner))) - scope.views
                        if not names <= scope.point:
                            scope.point |= names
                            changed = True
    both = scope.views & scope.point
    if both:
        scope.fail(body[0], f"{sorted(both)} are both views and per-point scalars")


def _check_uniform(scope, node, what):
    if scope.is_point(node):
        scope.fail(node, f"{what} depends on values (it must be the same at every point)")


def _check_statement(scope, stmt):
    """The checks every layout makes on one statement of the kernel language."""
    for node in ast.walk(stmt):
        if isinstance(node, ast.Subscript) and scope.element(node):
            _check_uniform(scope, node.slice, f"the index of {ast.unparse(node)}")
        if isinstance(node, ast.Subscript) and _base(node) in scope.views and _is_slice(node.slice):
            _check_uniform(scope, node.slice, f"the slice {ast.unparse(node)}")
    if isinstance(stmt, (ast.Assign, ast.AugAssign)):
        for t in _targets(stmt):
            if isinstance(t, ast.Subscript) and _base(t) in scope.views and _is_slice(t.slice):
                if isinstance(stmt, ast.AugAssign) or scope.is_point(stmt.value) or any(
                        isinstance(n, ast.Name) and n.id in scope.views
                        for n in ast.walk(stmt.value)):
                    scope.fail(stmt, "a view may be filled with a uniform scalar, not assigned "
                                     "values: copy element by element")
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == "np" and \
                any(isinstance(a, ast.Name) and a.id in scope.views for a in ast.walk(node)):
            scope.fail(node, f"numpy call on values ({ast.unparse(node.func)}): portable rules "
                             "compute element by element (override a layout's rule instead)")


# ---- flat and CUDA: the body as written, views and temps made explicit ------------------------

class _Fills(ast.NodeTransformer):
    """CUDA: `y[:] = c` as an element loop (device code has no array fill)."""

    def __init__(self, scope):
        self.scope, self.k = scope, 0

    def visit_Assign(self, node):
        t = node.targets[0]
        if len(node.targets) == 1 and isinstance(t, ast.Subscript) and _base(t) in \
                self.scope.views and _is_slice(t.slice):
            self.k += 1
            view, i = f"_fill{self.k}", f"_i{self.k}"
            return ast.parse(f"{view} = {ast.unparse(t)}\n"
                             f"for {i} in range({view}.shape[0]):\n"
                             f"    {view}[{i}] = {ast.unparse(node.value)}").body
        return node


def _scope_of(body):
    params = [a.arg for a in body.fdef.args.args]
    views = [p for p in params if p in BUFFERS] + sorted(body.value_params)
    scope = _Scope(body, views)
    _find_views_and_points(scope, body.fdef.body)
    return scope, views


class _FlatOffsets:
    """Flat layout: a view used only element by element becomes its slot's offset.

    `x = view(V, S, a)` costs a reference count taken and dropped at every call, and on scalar
    tapes the views are most of an entry's cost. Where every use of `x` is an element (`x[k]`,
    read or written) or its size, the view becomes `x_at = S[a, 0]` and `x_n = S[a, 1]`, and
    `x[k]` becomes `V[np.uint64(x_at + k)]`: an unsigned index, so that numba adds no test for
    a negative one (which would keep LLVM from vectorising the loop; the kernel language's
    indices are never negative). A view passed to a helper, sliced or filled stays a view."""

    def __init__(self, fdef):
        self.fdef = fdef

    def rewrite(self):
        taken = {n.id for n in ast.walk(self.fdef) if isinstance(n, ast.Name)}
        for stmt, name, (buffer, S, s) in self._candidates():
            if {f"{name}_at", f"{name}_n"} & taken:
                continue
            if self._only_elements(name, stmt):
                self._replace(stmt, name, buffer, S, s)
        return self.fdef

    def _candidates(self):
        assigned = {}
        for node in ast.walk(self.fdef):
            for t in _targets(node) if isinstance(node, ast.stmt) else ():
                for n in _names_in([t]):
                    assigned[n] = assigned.get(n, 0) + 1
        for node in ast.walk(self.fdef):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call) and \
                    isinstance(node.value.func, ast.Name) and node.value.func.id == "view" and \
                    len(node.value.args) == 3 and isinstance(node.value.args[0], ast.Name) and \
                    assigned[node.targets[0].id] == 1:
                yield node, node.targets[0].id, node.value.args

    def _only_elements(self, name, stmt):
        """Whether every use of `name` (other than its assignment) is an element or its size."""
        allowed = set()
        for node in ast.walk(self.fdef):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                    node.value.id == name and not _is_slice(node.slice) and \
                    not isinstance(node.slice, ast.Tuple) and not self._negative(node.slice):
                allowed.add(id(node.value))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == name and node.attr == "size":
                allowed.add(id(node.value))
        target = id(stmt.targets[0])
        return all(id(n) in allowed or id(n) == target for n in ast.walk(self.fdef)
                   if isinstance(n, ast.Name) and n.id == name)

    @staticmethod
    def _negative(index):
        return isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub)

    def _replace(self, stmt, name, buffer, S, s):
        at, n = f"{name}_at", f"{name}_n"
        stmt.targets = [ast.Tuple([ast.Name(at, ast.Store()), ast.Name(n, ast.Store())],
                                  ast.Store())]
        stmt.value = ast.Tuple([_sub(S, s, 0), _sub(S, s, 1)], ast.Load())
        buffer_name = buffer.id

        class Uses(ast.NodeTransformer):
            def visit_Subscript(self, node):
                self.generic_visit(node)
                if isinstance(node.value, ast.Name) and node.value.id == name:
                    index = ast.BinOp(ast.Name(at, ast.Load()), ast.Add(), node.slice)
                    node.value = ast.Name(buffer_name, ast.Load())
                    node.slice = ast.Call(ast.parse("np.uint64", mode="eval").body, [index], [])
                return node

            def visit_Attribute(self, node):
                self.generic_visit(node)
                if isinstance(node.value, ast.Name) and node.value.id == name:
                    return ast.Name(n, ast.Load())
                return node
        Uses().visit(self.fdef)


def source(fn, layout, name, portable=True):
    """The source text of kernel body `fn` (a function, or a `Body`) for `layout`, named
    `name`. A body that is not `portable` (a layout's override, or a helper written for one
    layout) is written for that layout already: only its views, temps and helper calls are
    made explicit."""
    if layout not in ("flat", "column", "cuda"):
        raise ValueError(f"unknown layout {layout!r}")
    body = fn if isinstance(fn, Body) else Body(fn)
    fdef = body.fdef
    fdef.name = name
    for arg in fdef.args.args:
        arg.annotation = None
    if not portable or body.layout is not None:
        if layout == "flat":
            fdef = _FlatOffsets(fdef).rewrite()
        return ast.unparse(ast.fix_missing_locations(_Names(body, layout).visit(fdef)))
    if body.helper and not body.value_params:
        _check_scalar_helper(body)
        return ast.unparse(ast.fix_missing_locations(_Names(body, layout).visit(fdef)))
    scope, views = _scope_of(body)
    _check_bound_views(scope, fdef.body)
    for stmt in ast.walk(ast.Module(fdef.body, [])):
        if isinstance(stmt, ast.stmt):
            _check_statement(scope, stmt)
    _check_control(scope, fdef.body)
    if layout == "column":
        fdef.body = _Column(scope, views).function(fdef.body)
    elif layout == "cuda":
        fdef = _Fills(scope).visit(fdef)
    else:
        fdef = _FlatOffsets(fdef).rewrite()
    fdef = _Names(body, layout).visit(fdef)
    return ast.unparse(ast.fix_missing_locations(fdef))


def _check_bound_views(scope, body):
    """view() and temp() are bound to a name by the statement that makes them (rule 1)."""
    bound = set()
    for node in ast.walk(ast.Module(body, [])):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            bound.add(id(node.value))
    for node in ast.walk(ast.Module(body, [])):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("view", "temp") and id(node) not in bound:
            scope.fail(node, f"bind {node.func.id}() to a name (x = {node.func.id}(...)) "
                             "before using it")


def _check_scalar_helper(body):
    for node in ast.walk(body.fdef):
        if isinstance(node, (ast.Subscript, ast.For, ast.While)) or (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("view", "temp")):
            raise KernelError(f"{body.name}: a scalar helper takes and returns scalars "
                              "(annotate view parameters `: Values` for an array helper)")


def _check_control(scope, body):
    """Loop bounds and conditions that contain loops are uniform; returns are uniform."""
    for stmt in body:
        if isinstance(stmt, ast.For):
            _check_uniform(scope, stmt.iter, "a loop bound")
            if not (isinstance(stmt.target, ast.Name)):
                scope.fail(stmt, "loop over range() with one index name")
            _check_control(scope, stmt.body)
        elif isinstance(stmt, ast.While):
            _check_uniform(scope, stmt.test, "a loop condition")
            _check_control(scope, stmt.body)
        elif isinstance(stmt, ast.If):
            if scope.is_point(stmt.test):
                if any(isinstance(n, (ast.For, ast.While, ast.Return)) for n in
                       ast.walk(ast.Module(stmt.body + stmt.orelse, []))):
                    scope.fail(stmt, "a condition on values may not contain a loop or a return")
            else:
                _check_control(scope, stmt.body)
                _check_control(scope, stmt.orelse)
        elif isinstance(stmt, ast.Return) and stmt.value is not None:
            _check_uniform(scope, stmt.value, "a returned value")
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            if isinstance(call.func, ast.Name) and scope.body.callee(call.func.id) is not None:
                for arg in call.args:
                    _check_uniform(scope, arg, f"an argument of {call.func.id}")


# ---- column: point statements in loops over the tile -----------------------------------------

class _Column:
    """The column-layout rewrite of one function body (module docstring, rule 3)."""

    def __init__(self, scope, views):
        self.scope = scope
        self.first_view = views[0] if views else None
        self.rows = 0
        self.promoted = set()

    def function(self, body):
        if self.first_view is None:
            self.scope.fail(body[0], "an array helper needs a view parameter (`: Values`)")
        runs = []
        self._collect_runs(body, runs)
        # a per-point scalar read in a run before that run assigns it carries a value from
        # elsewhere (an accumulator, a value computed before a loop): one row of its own
        self.promoted = set()
        for run in runs:
            self.promoted |= _live_in(run) & self.scope.point
        width = ast.parse(f"_P = {self.first_view}.shape[1]").body
        # float64, as numba types the register these rows stand for in the flat and CUDA
        # layouts (an accumulator starts from a float literal): a float32 tape's sum then
        # rounds as the flat replay's does, once, when it is stored
        promoted = [ast.parse(f"{name} = np.empty({self.first_view}.shape[1], np.float64)")
                    .body[0] for name in sorted(self.promoted)]
        return width + promoted + self._block(body)

    def _is_point_stmt(self, stmt):
        if isinstance(stmt, (ast.For, ast.While)):
            return False
        if isinstance(stmt, ast.If):
            return self.scope.is_point(stmt.test)
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            if stmt.value is not None and self.scope.makes_view(stmt.value):
                return False
            targets = _targets(stmt)
            if any(isinstance(t, ast.Subscript) and _base(t) in self.scope.views and
                   _is_slice(t.slice) for t in targets):
                return False                                   # a fill: whole rows at once
            return self.scope.is_point(stmt) or any(
                n in self.scope.point for n in _names_in(targets))
        return self.scope.is_point(stmt)

    def _collect_runs(self, body, runs):
        run = []
        for stmt in body:
            if self._is_point_stmt(stmt):
                run.append(stmt)
                continue
            if run:
                runs.append(run)
                run = []
            for inner in (getattr(stmt, "body", []), getattr(stmt, "orelse", [])):
                if inner and not isinstance(stmt, ast.FunctionDef):
                    self._collect_runs(inner, runs)
        if run:
            runs.append(run)

    def _block(self, body):
        out, run = [], []
        for stmt in body:
            if self._is_point_stmt(stmt):
                run.append(stmt)
                continue
            if run:
                out += self._loop(run)
                run = []
            out.append(self._uniform(stmt))
        if run:
            out += self._loop(run)
        return out

    def _uniform(self, stmt):
        if isinstance(stmt, (ast.For, ast.While, ast.If)):
            stmt.body = self._block(stmt.body)
            stmt.orelse = self._block(stmt.orelse) if stmt.orelse else []
        return _Sizes(self.scope).visit(stmt)

    def _loop(self, run):
        """`for p in range(_P)` around a run, element accesses as rows taken before it."""
        rows, before = {}, []
        rewrite = _PointAccess(self.scope, self.promoted, rows, before, self)
        body = [rewrite.visit(stmt) for stmt in run]
        loop = ast.For(ast.Name("p", ast.Store()),
                       ast.Call(ast.Name("range", ast.Load()), [ast.Name("_P", ast.Load())], []),
                       body, [])
        return before + [loop]


def _live_in(run):
    """Names a run of statements reads before it has surely assigned them."""
    live, assigned = set(), set()
    for stmt in run:
        live |= _reads(stmt) - assigned
        assigned |= _surely_assigned(stmt)
    return live


def _reads(stmt):
    """Names `stmt` reads before its own assignments (its loads, less those a branch of it
    assigns first)."""
    if isinstance(stmt, ast.If):
        reads = {n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)}
        for branch in (stmt.body, stmt.orelse):
            reads |= _live_in(branch)
        return reads
    reads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and
             isinstance(n.ctx, ast.Load)}
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        reads.add(stmt.target.id)
    return reads


def _surely_assigned(stmt):
    if isinstance(stmt, ast.If):
        if not stmt.orelse:
            return set()
        body, orelse = set(), set()
        for inner in stmt.body:
            body |= _surely_assigned(inner)
        for inner in stmt.orelse:
            orelse |= _surely_assigned(inner)
        return body & orelse
    return set(_names_in(_targets(stmt)))


class _Sizes(ast.NodeTransformer):
    """`x.size` of a view is its number of rows in the column layout."""

    def __init__(self, scope):
        self.scope = scope

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if node.attr == "size" and isinstance(node.value, ast.Name) and \
                node.value.id in self.scope.views:
            return ast.Subscript(ast.Attribute(node.value, "shape", ast.Load()), ast.Constant(0),
                                 ast.Load())
        return node


class _PointAccess(ast.NodeTransformer):
    """Inside a point loop: `x[k]` -> `row[p]` (row = x[k] taken once before the loop), and a
    promoted per-point scalar `acc` -> `acc[p]`."""

    def __init__(self, scope, promoted, rows, before, column):
        self.scope, self.promoted, self.rows, self.before, self.column = \
            scope, promoted, rows, before, column

    def visit_Subscript(self, node):
        if self.scope.element(node):
            index = _Sizes(self.scope).visit(node.slice)
            key = (node.value.id, ast.dump(index))
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = f"_row{self.column.rows}"
                self.column.rows += 1
                self.before.append(ast.Assign(
                    [ast.Name(row, ast.Store())],
                    ast.Subscript(ast.Name(node.value.id, ast.Load()), index, ast.Load())))
            return ast.Subscript(ast.Name(row, ast.Load()), ast.Name("p", ast.Load()), node.ctx)
        return self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in self.promoted:
            return ast.Subscript(ast.Name(node.id, ast.Load()), ast.Name("p", ast.Load()),
                                 node.ctx)
        return node

    def visit_Attribute(self, node):
        return _Sizes(self.scope).visit(node)
