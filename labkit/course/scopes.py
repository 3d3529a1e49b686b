"""Which global names a statement of a notebook reads and binds, by Python's own scoping rules.

The review (``labkit.course.review``) follows names bound to labkit from cell to cell. To do that it needs,
for each top-level statement, the *global* names it reads and binds, wherever they appear inside it: in a
function's body or default arguments, in a decorator, a lambda, a class or a comprehension. A name a
function binds itself (a parameter, a local variable) is not a global, unless the function says ``global``;
a name a function reads that is bound in an enclosing function is a closure variable, not a global.

    summary = statement_names(ast.parse("def f(x, g=diffusion.q_sample):\\n    return g(x) + y").body[0])
    summary.reads == {"diffusion", "y"};  summary.binds == {"f"}
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class Names:
    """What one top-level statement does with global names."""

    reads: set = field(default_factory=set)  # global names loaded anywhere in it
    binds: set = field(default_factory=set)  # global names it assigns, defines or imports
    filled: set = field(default_factory=set)  # globals it stores into (``box.f = ...``, ``box[0] = ...``)
    receivers: set = field(default_factory=set)  # globals whose methods it calls (``box.append(...)``)
    imports: set = field(default_factory=set)  # modules it imports, anywhere in it (``labkit.diffusion``)
    dotted: set = field(default_factory=set)  # dotted global reads (``diffusion.q_sample``)


class _Scope:
    def __init__(self, kind: str, parent: "_Scope | None", local: set, declared_global: set):
        self.kind, self.parent, self.local, self.declared_global = kind, parent, local, declared_global


def _own_nodes(body):
    """Nodes evaluated in the scope that owns ``body``: nested functions, lambdas, classes and
    comprehensions are skipped, except for the parts of them that run in this scope (decorators,
    defaults, base classes, a comprehension's first iterable)."""
    stack = list(body) if isinstance(body, list) else [body]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            stack += [d for d in a.defaults + a.kw_defaults if d is not None]
            stack += getattr(node, "decorator_list", [])
        elif isinstance(node, ast.ClassDef):
            stack += node.bases + [k.value for k in node.keywords] + node.decorator_list
        elif isinstance(node, COMPREHENSIONS):
            stack.append(node.generators[0].iter)
        else:
            stack += list(ast.iter_child_nodes(node))


def _bound_here(body, params=()) -> tuple[set, set]:
    """(names local to the scope of ``body``, names it declares ``global`` or ``nonlocal``)."""
    local, declared = set(params), set()
    for node in _own_nodes(body):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            local.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            local.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            local.add(node.rest)
    return local - declared, declared


def _params(args: ast.arguments) -> list[str]:
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return names + [a.arg for a in (args.vararg, args.kwarg) if a is not None]


def _is_global(name: str, scope: "_Scope | None") -> bool:
    """Does ``name``, used in ``scope``, mean the module's global? (Class bodies are skipped by the
    functions nested in them, as Python does.)"""
    first = True
    while scope is not None:
        if name in scope.declared_global and scope.kind != "module":
            return True  # ``global x`` (a ``nonlocal`` name is never a module global: close enough)
        if name in scope.local and (scope.kind != "class" or first):
            return False
        first, scope = False, scope.parent
    return True


def _root(node) -> ast.Name | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node if isinstance(node, ast.Name) else None


def dotted_name(node) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id] + parts[::-1]) if isinstance(node, ast.Name) else None


def statement_names(stmt: ast.stmt) -> Names:
    """The global names one top-level statement reads, binds, fills and calls methods of."""
    out = Names()
    module = _Scope("module", None, set(), set())
    _visit(stmt, module, out)
    return out


def _visit(node, scope: _Scope, out: Names) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        for part in [d for d in a.defaults + a.kw_defaults if d is not None] + getattr(node, "decorator_list", []):
            _visit(part, scope, out)
        if not isinstance(node, ast.Lambda):
            _store(node.name, scope, out)
        body = node.body
        local, declared = _bound_here(body, _params(a))
        inner = _Scope("function", scope, local, declared)
        for child in body if isinstance(body, list) else [body]:
            _visit(child, inner, out)
        return
    if isinstance(node, ast.ClassDef):
        for part in node.bases + [k.value for k in node.keywords] + node.decorator_list:
            _visit(part, scope, out)
        _store(node.name, scope, out)
        local, declared = _bound_here(node.body)
        inner = _Scope("class", scope, local, declared)
        for child in node.body:
            _visit(child, inner, out)
        return
    if isinstance(node, COMPREHENSIONS):
        _visit(node.generators[0].iter, scope, out)
        targets = set()
        for g in node.generators:
            targets |= {n.id for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        inner = _Scope("function", scope, targets, set())
        rest = [g.target for g in node.generators] + [i for g in node.generators for i in g.ifs]
        rest += [g.iter for g in node.generators[1:]]
        rest += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for child in rest:
            _visit(child, inner, out)
        return
    if isinstance(node, ast.Name):
        if isinstance(node.ctx, ast.Load):
            if _is_global(node.id, scope):
                out.reads.add(node.id)
        else:
            _store(node.id, scope, out)
        return
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for a in node.names:
            full = a.name if isinstance(node, ast.Import) else f"{node.module or ''}.{a.name}"
            out.imports.add(full)
            # ``from m import *`` binds names nobody wrote down: "*" stands for all of them
            _store((a.asname or a.name).split(".")[0] if a.name != "*" else "*", scope, out)
        return
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        name = dotted_name(node)
        if name and _is_global(name.split(".")[0], scope):
            out.dotted.add(name)
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for t in targets:
            for part in ast.walk(t):
                root = _root(part) if isinstance(part, (ast.Attribute, ast.Subscript)) else None
                if root is not None and _is_global(root.id, scope):
                    out.filled.add(root.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        root = _root(node.func)
        if root is not None and _is_global(root.id, scope):
            out.receivers.add(root.id)
    for child in ast.iter_child_nodes(node):
        _visit(child, scope, out)


def _store(name: str, scope: _Scope, out: Names) -> None:
    if scope.kind == "module" or name in scope.declared_global:
        out.binds.add(name)
