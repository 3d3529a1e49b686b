"""The static review of a submission: read the notebook as its kernel will run it, and follow labkit.

labkit holds the reference answers (``labkit.diffusion.q_sample`` *is* lab 01's ``q_sample``), and no check
can tell a call to it from the student's own formula. This review reads the code before grading and writes
a ``REVIEW`` note when an exercise's function may reach labkit, or when student code reaches for objects by
a route the review cannot follow (reflection). It never changes a score; the instructor decides.

It reads what will run, not what the notebook looks like:

* the cells nbgrader will execute, after ``restore``: a cell typed markdown or raw that carries an answer
  cell's id is turned back into code by nbgrader, and runs; a locked cell runs the release's source,
  whatever the submission holds; test cells run in the grader, never in the kernel;
* each cell as IPython's own input transformer turns it into Python (``x = %pwd`` is a call, not a line
  to drop), and the code inside ``%time``, ``%%capture`` and the like is read as code;
* names, followed through the whole notebook: a name bound to anything built from labkit (``_D =
  diffusion`` in one cell, ``_D.q_sample`` in another; a list holding it; a default argument; a closure;
  a decorator; a lambda) carries labkit with it, wherever it goes.

What it cannot see: code it cannot read (strings run by ``exec``, objects reached through ``sys.modules``,
``gc`` or ``__subclasses__``): those are flagged as such, since an answer never needs them. And nothing can
tell a formula a student retyped from labkit's source from one they wrote: that is reading the library.
``labkit.course.kernel_side`` adds a second, dynamic layer that watches what a call actually runs.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys

from labkit.course.exercises import GIVEN
from labkit.course.scopes import dotted_name, statement_names

LIBRARY = "labkit"
# Modules whose every use is reflection: they reach objects by name, frame or memory, not by a path the
# review can follow. ``sys`` is common in honest code, so only its reflective attributes count (below).
REFLECTIVE_MODULES = {
    "gc",
    "importlib",
    "inspect",
    "ctypes",
    "builtins",
    "types",
    "runpy",
    "marshal",
    "pickle",
    "code",
    "codeop",
    "imp",
    "pkgutil",
    "dis",
    "operator",
    "functools",
    "weakref",
}
# Modules an answer never needs that open files, processes or the network, or hide code in data.
DYNAMIC_MODULES = {
    "subprocess",
    "socket",
    "urllib",
    "http",
    "requests",
    "multiprocessing",
    "base64",
    "codecs",
    "site",
    "zipimport",
    "shutil",
    "tempfile",
    "pty",
    "signal",
    "threading",
    "_thread",
}
# Attributes that only sys (or an alias of it) has, and that reach modules, frames or the tracer.
SYS_REFLECTIVE = {
    "_getframe",
    "meta_path",
    "path_hooks",
    "path_importer_cache",
    "settrace",
    "setprofile",
    "gettrace",
    "getprofile",
    "monitoring",
    "_current_frames",
}
SYS_HARMLESS = {
    "version",
    "version_info",
    "platform",
    "stdout",
    "stderr",
    "maxsize",
    "float_info",
    "int_info",
    "getsizeof",
    "getrecursionlimit",
    "setrecursionlimit",
    "byteorder",
    "hexversion",
    "implementation",
}
DYNAMIC_CALLS = {
    "exec",
    "eval",
    "compile",
    "__import__",
    "globals",
    "vars",
    "locals",
    "breakpoint",
    "open",
    "setattr",
    "delattr",
    "get_ipython",
    "memoryview",
}
# Dunder attributes that lead to objects by reflection (the class tree, a function's globals, frames).
HARMLESS_DUNDERS = {
    "__init__",
    "__name__",
    "__qualname__",
    "__doc__",
    "__len__",
    "__call__",
    "__class__",
    "__enter__",
    "__exit__",
    "__repr__",
    "__str__",
    "__iter__",
    "__next__",
    "__getitem__",
    "__setitem__",
    "__contains__",
    "__eq__",
    "__hash__",
    "__add__",
    "__mul__",
    "__post_init__",
    "__version__",
    "__file__",
}
FRAME_ATTRIBUTES = {
    "f_globals",
    "f_locals",
    "f_back",
    "f_builtins",
    "gi_frame",
    "cr_frame",
    "ag_frame",
    "tb_frame",
    "tb_next",
    "func_globals",
}
# IPython's output history: ``Out[3]`` (or ``_3``) holds whatever cell 3's last expression showed.
HISTORY = re.compile(r"^(Out|In|_oh|_ih|_dh|_ii?i?|_i\d+|_\d+|__|___)$")
# Magics: those whose argument is Python code run in the notebook, and those that run nothing.
CODE_MAGICS = {"time", "timeit", "prun", "capture"}
HARMLESS_MAGICS = {
    "pwd",
    "matplotlib",
    "who",
    "whos",
    "who_ls",
    "lsmagic",
    "magic",
    "pinfo",
    "pinfo2",
    "precision",
    "history",
    "pdoc",
    "pdef",
    "xmode",
    "autosave",
    "ls",
    "autoreload",
}


# --- the notebook as the kernel runs it -------------------------------------------------------------


def cells_as_run(nb, release) -> list[tuple[int, str, str, bool]]:
    """``(index, label, python source, written by the student)`` for each cell the kernel will execute,
    in order: what nbgrader's ``OverwriteCells`` makes of the (restored) submission, translated by
    IPython. A cell identical to a release cell is not the student's writing (but still runs)."""
    from labkit.course.restore import normalise_source

    by_id = {(c.metadata.get("nbgrader") or {}).get("grade_id"): c for c in release.cells if c.metadata.get("nbgrader")}
    given = {normalise_source(c.source) for c in release.cells if c.cell_type == "code"}
    out = []
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader") or {}
        md = md if isinstance(md, dict) else {}
        gid, source, kind = md.get("grade_id"), str(cell.get("source", "")), cell.get("cell_type")
        rel = by_id.get(gid) if gid else None
        if rel is not None:  # nbgrader takes the cell's type (and, for a locked cell, its source) from the release
            kind = rel.cell_type
            if (rel.metadata.get("nbgrader") or {}).get("locked"):
                source = rel.source
        if kind != "code" or (md.get("grade") and not md.get("solution")):
            continue  # not run at all, or a test cell (run in the grader)
        label = f"cell {i}" + (f" ({gid})" if gid else "")
        out.append((i, label, to_python(source), normalise_source(source) not in given))
    return out


def to_python(source: str) -> str:
    """``source`` as IPython runs it: magics and shell escapes become calls (``get_ipython()...``)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - the instructor extra installs IPython
        return "\n".join("get_ipython()" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # IPython itself cannot read it: nor will the kernel run it
        return source


def _magic(node) -> tuple[str, list[str]] | None:
    """``("time", [code...])`` for ``get_ipython().run_line_magic("time", "...")`` and the like; ``("!", ...)``
    for a shell escape; None for anything else."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
    ):
        return None
    args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
    method = node.func.attr
    if method in ("system", "getoutput"):
        return "!", []
    if method in ("run_line_magic", "run_cell_magic") and args and args[0] is not None and None not in args:
        return args[0], args[1:]
    return "?" + method, []


def _code_in_magic(texts: list[str], depth: int) -> list[ast.Module] | None:
    """The Python inside a code magic's arguments: every reading of them that parses, with leading options
    (``-n 1 -r 3``) dropped or kept, so that whichever IPython picks is among them. None when the magics
    nest too deep to follow."""
    if depth >= 4:
        return None
    trees = []
    for text in texts:
        words = text.split(" ")
        for k in range(min(len(words), 12)):
            dropped = words[:k]
            if any(not w.startswith("-") and not (j and dropped[j - 1].startswith("-")) for j, w in enumerate(dropped)):
                break  # only options and their values come before the code
            try:
                trees.append(ast.parse(to_python(" ".join(words[k:]))))
            except (SyntaxError, ValueError):
                continue
    return trees


# --- the review -------------------------------------------------------------------------------------


class _Statement:
    def __init__(self, tree: ast.stmt, where: str, gid: str | None, written: bool):
        self.tree, self.where, self.gid, self.written = tree, where, gid, written
        self.concerns: list[str] = []  # reflection and dynamic code, as the note names them
        try:
            self.names = statement_names(tree)
        except RecursionError:
            self.names, self.tree = statement_names(ast.Pass()), ast.Pass()
            self.concerns.append(TOO_DEEP)
        self.touches = any(m.split(".")[0] == LIBRARY for m in self.names.imports)


# A cell nested deeper than this process can parse: a notebook may raise its kernel's recursion limit first.
TOO_DEEP = "code nested too deeply for the review to read"


def _statements(nb, release) -> list[_Statement]:
    """Every top-level statement the kernel will run (magic code included), in order."""
    out = []
    for i, label, source, written in cells_as_run(nb, release):
        gid = ((nb.cells[i].metadata.get("nbgrader") or {}) or {}).get("grade_id")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue  # the kernel cannot run it either: the cell fails and defines nothing
        except (RecursionError, MemoryError):
            deep = _Statement(ast.Pass(), label, gid, True)
            deep.concerns.append(TOO_DEEP)
            out.append(deep)
            continue
        out += _expand(tree.body, label, gid, written, 0)
    return out


def _expand(body: list, label: str, gid, written: bool, depth: int) -> list[_Statement]:
    out = []
    for stmt in body:
        st = _Statement(stmt, label, gid, written)
        for node in ast.walk(stmt):
            magic = _magic(node)
            if magic is None:
                continue
            name, texts = magic
            if name in CODE_MAGICS:
                trees = _code_in_magic(texts, depth)
                inside = any(
                    isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
                    for n in ast.walk(stmt)
                )
                if trees is None or inside:
                    st.concerns.append(f"%{name} with code the review cannot place")
                for tree in trees or []:
                    out += _expand(tree.body, label, gid, written, depth + 1)
            elif name == "load_ext" and texts[:1] == ["autoreload"] or name in HARMLESS_MAGICS:
                pass
            elif name == "!":
                st.concerns.append("a shell command (!)")
            else:
                st.concerns.append(f"the magic %{name.lstrip('?')}")
        out.append(st)
    return out


def _concerns(st: _Statement, imported_modules: dict[str, str], bound: set[str]) -> list[str]:
    """What in one statement of the student's code reaches objects by reflection or runs hidden code."""
    found = []
    magic_parts = {id(n) for m in ast.walk(st.tree) if _magic(m) is not None for n in ast.walk(m.func.value)}
    for node in ast.walk(st.tree):
        if id(node) in magic_parts:
            continue  # the translated magic itself, read by _expand
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC_CALLS:
            found.append(f"{node.func.id}()")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and not (len(node.args) >= 2 and isinstance(node.args[1], ast.Constant))
        ):
            found.append("getattr() with a computed name")
        elif (
            isinstance(node, ast.Name)
            and node.id in ("getattr", "setattr", "eval", "exec", "__import__", "globals", "vars")
            and not _called(node, st.tree)
        ):
            found.append(f"{node.id} passed around")
        elif (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and (
                node.id in ("__builtins__", "__loader__", "__spec__")
                or (HISTORY.match(node.id) and node.id not in bound)
            )
        ):
            found.append(node.id)
        elif isinstance(node, ast.Attribute) and (
            node.attr in FRAME_ATTRIBUTES
            or (node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in HARMLESS_DUNDERS)
        ):
            found.append(f"the attribute {node.attr}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and imported_modules.get(node.value.id) == "sys"
            and node.attr not in SYS_HARMLESS
        ):
            found.append(f"sys.{node.attr}")
        elif isinstance(node, ast.Attribute) and (
            node.attr in SYS_REFLECTIVE or (node.attr == "modules" and not _called(node, st.tree))
        ):  # ``model.modules()`` is a call
            found.append(f"the attribute {node.attr} (of sys?)")
        elif (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and imported_modules.get(node.id, "").split(".")[0] in REFLECTIVE_MODULES
        ):
            found.append(imported_modules[node.id].split(".")[0])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module == "sys":
                mods += [f"sys.{a.name}" for a in node.names if a.name not in SYS_HARMLESS]
            for m in mods:
                top = m.split(".")[0]
                if top in REFLECTIVE_MODULES | DYNAMIC_MODULES or m.startswith("sys."):
                    found.append(f"import {m}")
                elif getattr(node, "level", 0) or not _installed(top):
                    found.append(f"import {m} (not an installed package: a file the notebook wrote?)")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                root = t
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if root is not t and isinstance(root, ast.Name) and root.id in imported_modules:
                    found.append(f"a store into the module {imported_modules[root.id]}")
    return list(dict.fromkeys(st.concerns + found))


def _called(name: ast.Name, tree) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


def _installed(top: str) -> bool:
    """Is ``top`` a module of the standard library or of an installed package (as opposed to a file that
    the notebook itself wrote into its folder before importing it)?"""
    import importlib.util

    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == LIBRARY:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace") and "-packages" in str(spec.origin)


def _taint(statements: list[_Statement], imported_modules: dict[str, str]) -> dict[str, str]:
    """``{name: why}`` for every global name that may hold something built from labkit: imported from
    it, or bound, filled or called on by a statement that reads such a name or uses reflection. Followed
    to a fixed point over the whole notebook, in any order (a cell can be run again later). Not followed:
    what the lab's own cells compute by calling labkit (``DEVICE = colab.setup()``, ``linear =
    schedules.make_schedule(...)``): an answer may use that data, and a method of such an object that runs
    labkit's answer is the dynamic review's to see."""
    tainted: dict[str, str] = {}
    bound = set().union(*(st.names.binds for st in statements)) if statements else set()
    builtin = set(dir(builtins)) - bound
    changed = True
    while changed:
        changed = False
        for st in statements:
            if (
                not st.written
                and isinstance(st.tree, ast.Assign)
                and isinstance(st.tree.value, ast.Call)
                and not st.touches
            ):
                continue  # the lab's own results (DEVICE = colab.setup(), a schedule): data it hands the student
            via = sorted(st.names.reads & set(tainted))
            if not (st.touches or via or st.concerns):
                continue
            why = (
                "imports " + ", ".join(sorted(m for m in st.names.imports if m.split(".")[0] == LIBRARY))
                if st.touches
                else f"built from {', '.join(via)}"
                if via
                else "reflection"
            )
            modules = {n for n, m in imported_modules.items() if m.split(".")[0] != LIBRARY}
            # a builtin the notebook never rebinds (super().__init__() in a class) holds nothing of labkit
            for name in st.names.binds | st.names.filled | (st.names.receivers - modules - builtin):
                if name not in tainted:
                    tainted[name], changed = why, True
    return tainted


def _imported_modules(statements: list[_Statement]) -> dict[str, str]:
    """``{global name: module}`` for names bound by ``import m`` / ``import m as x`` / ``from p import m``,
    and by a plain alias of one (``s = sys``, ``m = np.linalg``), followed from cell to cell."""
    out = {}
    for st in statements:
        if isinstance(st.tree, ast.Import):
            for a in st.tree.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(st.tree, ast.ImportFrom) and st.tree.module:
            for a in st.tree.names:
                out[a.asname or a.name] = f"{st.tree.module}.{a.name}"
    aliases = [
        (t.id, st.tree.value)
        for st in statements
        if isinstance(st.tree, ast.Assign) and isinstance(st.tree.value, (ast.Name, ast.Attribute))
        for t in st.tree.targets
        if isinstance(t, ast.Name)
    ]
    for _ in range(len(aliases)):
        grew = False
        for name, value in aliases:
            dotted = dotted_name(value)
            root = dotted.split(".")[0] if dotted else None
            if root in out and name not in out:
                out[name], grew = out[root] + dotted[len(root) :], True
        if not grew:
            break
    return out


def _labkit_names(
    st: _Statement, imported_modules: dict[str, str], tainted: dict[str, str], functions: set[str]
) -> list[str]:
    """How a statement reaches labkit, in words an instructor can check: ``labkit.diffusion.q_sample``,
    ``_D (built from diffusion)``, ``helper uses labkit``."""
    out = [m for m in sorted(st.names.imports) if m.split(".")[0] == LIBRARY]
    for name in sorted(st.names.reads & set(tainted)):
        module = imported_modules.get(name, "")
        if module.split(".")[0] == LIBRARY:
            alias = name != module.split(".")[-1]  # ``_D = diffusion``: say so
            uses = sorted(
                module + d[len(name) :] + (f" (as {d})" if alias else "")
                for d in st.names.dotted
                if d.split(".")[0] == name
            )
            out += uses or [module]
        else:
            out.append(f"{name} uses labkit" if name in functions else f"{name} ({tainted[name]})")
    return list(dict.fromkeys(out))


def static_notes(nb, release) -> list[str]:
    """REVIEW notes from reading the (restored) submission as its kernel will run it:

    * an exercise's function that may reach labkit (defined, assigned or decorated from anything built from
      it, in its own cell or any other): the checks cannot tell labkit's answer from the student's;
    * student code that uses reflection or hidden code (``sys.modules``, ``gc``, ``__subclasses__``,
      ``__globals__``, ``__builtins__``, ``importlib``, ``getattr`` with a computed name, ``exec``,
      ``eval``, shell escapes, unknown magics, a module the notebook wrote itself).
    """
    from labkit.course.restore import stub_names

    exercises = {}  # exercise name -> the grade id of its answer cell
    for c in release.cells:
        md = c.metadata.get("nbgrader") or {}
        if md.get("solution") and c.cell_type == "code":
            exercises.update({n: md.get("grade_id") for n in stub_names(c.source)})
    statements = _statements(nb, release)
    imported = _imported_modules(statements)
    bound = set().union(*(st.names.binds for st in statements)) if statements else set()
    for st in statements:
        if st.written:
            st.concerns = st.concerns + _concerns(st, imported, bound)
    tainted = _taint(statements, imported)
    functions = {st.tree.name for st in statements if isinstance(st.tree, (ast.FunctionDef, ast.AsyncFunctionDef))}
    notes = []
    for st in statements:
        named = sorted(set(exercises) if "*" in st.names.binds else st.names.binds & set(exercises))
        given = set.intersection(*(set(GIVEN.get(n, ())) for n in named)) if named else set()
        how = [h for h in (_labkit_names(st, imported, tainted, functions) if named else []) if h not in given]
        if how:  # (an answer that reaches labkit only by reflection gets the note on reflection below)
            outside = [n for n in named if exercises[n] != st.gid]
            if outside:
                notes.append(
                    f"REVIEW {st.where}: binds {', '.join(outside)} outside its answer cell, from labkit "
                    f"({', '.join(how[:6])}) (the test would grade that instead of the answer)"
                )
            if len(outside) < len(named):
                notes.append(
                    f"REVIEW {st.where}: the answer uses labkit ({', '.join(how[:6])}), which holds the "
                    "reference answers: check that it does not just call the function it should write"
                )
        if st.written and st.concerns:
            notes.append(
                f"REVIEW {st.where}: uses {', '.join(st.concerns[:6])} (reflection or hidden code, not "
                "needed for any exercise: the review cannot follow where it leads)"
            )
    return list(dict.fromkeys(notes))


# --- the dynamic layer's findings, as the grader records them ---------------------------------------


def dynamic_finding(name: str, reply: dict) -> dict:
    """What one reply of the kernel says about labkit (``kernel_side.watch_library``), reduced to plain,
    capped data: ``{"function": name, "ran": [...], "watched": bool, "reported": bool}``. The reply comes
    from the student's kernel: a dotted name or nothing survives, never text that could mean more."""
    field = reply.get("library")
    ok = isinstance(field, dict) and isinstance(field.get("ran"), list)
    ran = [r for r in (field["ran"] if ok else [])[:20] if isinstance(r, str) and re.fullmatch(r"[\w.]{1,100}", r)]
    return {
        "function": str(name)[:100],
        "ran": ran,
        "watched": (field.get("watched") is True) if ok else None,
        "reported": ok or reply.get("status") != "ok",
    }


def dynamic_notes(graded_nb) -> list[str]:
    """REVIEW notes from what the grader learnt while it called the student's functions (recorded on each
    test cell by ``trusted``): labkit's own answer ran, the watch was switched off, or a reply carried no
    report at all (a notebook that answers the grader with its own code)."""
    notes = []
    for i, cell in enumerate(graded_nb.cells):
        md = cell.metadata.get("labkit") if isinstance(cell.metadata.get("labkit"), dict) else {}
        findings = md.get("library") if isinstance(md.get("library"), list) else []
        gid = (cell.metadata.get("nbgrader") or {}).get("grade_id")
        where = f"cell {i}" + (f" ({gid})" if gid else "")
        ran, off, silent = {}, set(), set()
        for f in (f for f in findings if isinstance(f, dict)):
            fn = str(f.get("function"))[:100]
            for r in f.get("ran") or []:
                ran.setdefault(fn, set()).add(str(r)[:100])
            if not f.get("reported"):
                silent.add(fn)
            elif f.get("watched") is False:
                off.add(fn)
        for fn, what in sorted(ran.items()):
            notes.append(
                f"REVIEW {where}: while the grader called {fn}, it ran {', '.join(sorted(what))} "
                "(labkit's own answer, seen by the dynamic review)"
            )
        if off - silent:
            notes.append(
                f"REVIEW {where}: {', '.join(sorted(off - silent))} switched off the grader's watch "
                "(sys.settrace) while it ran"
            )
        if silent:
            notes.append(
                f"REVIEW {where}: the kernel's reply for {', '.join(sorted(silent))} said nothing about "
                "what ran (did the notebook replace labkit's side of the call?)"
            )
    return notes
