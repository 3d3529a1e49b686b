"""Put a submitted notebook back into a gradable state: lost nbgrader metadata, duplicate ids, deleted tests."""

from __future__ import annotations

import copy
import re

from labkit.course.sources import import_nbformat, KERNELSPEC


def normalise_source(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def stub_names(source: str) -> list[str]:
    return re.findall(r"^\s*(?:def|class)\s+([A-Za-z_]\w*)", source, re.M)


def _written_answer(nb, window: list[int], rel, gid: str, notes: list[str]) -> int | None:
    """A written answer (markdown answer cell) whose metadata was lost, among several markdown cells between
    its question and the next one: the first cell the student wrote in (not empty, not the release's "YOUR
    ANSWER HERE"); the others stay ordinary cells, still shown to the grader. None if nothing was written."""
    stub = normalise_source(rel.source)
    written = [i for i in window if normalise_source(nb.cells[i].source) not in ("", stub)]
    if not written:
        return None
    if len(written) > 1:
        notes.append(f"'{gid}': the answer continues in cells {written[1:]} (ungraded cells; the grader sees them)")
    return written[0]


def restore_submission(nb, release) -> list[str]:
    """Make a submitted notebook gradeable again, in place; return notes on what was changed.

    * nbgrader metadata whose grade_id is unknown or repeated (a copy-pasted cell, nbgrader #1083) is
      removed: the later copies become ordinary cells;
    * cells that lost their metadata get it back from the release notebook: locked cells (tests,
      instructions) by their source, solution cells by position between matched cells and by the
      function they define;
    * locked cells that are still missing (deleted tests) are put back after the previous graded cell
      (their hidden tests come back from the source at autograde time);
    * cell ids are made unique and present; the kernel is set to python3;
    * every cell's ``labkit`` metadata is dropped: that is where the grader records a test's outcome and what
      its calls ran (``trusted``), read by the class report and the review, so a submission may not bring its own.
    """
    nbf = import_nbformat()
    notes: list[str] = []
    planted = [i for i, c in enumerate(nb.cells) if "labkit" in c.metadata]
    for i in planted:
        del nb.cells[i].metadata["labkit"]
    if planted:
        notes.append(f"cells {planted[:10]}: metadata only the grader writes (labkit) removed")
    rel_cells = [c for c in release.cells if c.metadata.get("nbgrader")]
    rel_by_id = {c.metadata["nbgrader"]["grade_id"]: c for c in rel_cells}
    order = [c.metadata["nbgrader"]["grade_id"] for c in rel_cells]

    # 1. remove unknown / duplicate grade ids
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader")
        if md is None:
            continue
        gid = md.get("grade_id") if isinstance(md, dict) else None
        if gid not in rel_by_id or gid in seen or not isinstance(md, dict):
            del cell.metadata["nbgrader"]
            if gid in seen:
                notes.append(f"cell {i}: duplicate of '{gid}' (copied cell), graded as an ordinary cell")
            elif not (
                isinstance(md, dict)
                and set(md) <= {"grade", "solution", "locked", "schema_version"}
                and not any(md.get(k) for k in ("grade", "solution", "locked"))
            ):
                notes.append(f"cell {i}: unknown nbgrader metadata removed")
            continue
        seen.add(gid)

    def present() -> dict[str, int]:
        return {c.metadata["nbgrader"]["grade_id"]: i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader")}

    def attach(i: int, gid: str, how: str) -> None:
        nb.cells[i].metadata["nbgrader"] = copy.deepcopy(rel_by_id[gid].metadata["nbgrader"])
        notes.append(f"cell {i}: restored nbgrader metadata of '{gid}' ({how})")

    # 2. locked cells by exact (whitespace-normalised) source
    free = lambda i: not nb.cells[i].metadata.get("nbgrader")  # noqa: E731
    for gid in order:
        rel = rel_by_id[gid]
        md = rel.metadata["nbgrader"]
        if gid in present() or md.get("solution") or not md.get("locked"):
            continue
        target = normalise_source(rel.source)
        for i, cell in enumerate(nb.cells):
            if free(i) and cell.cell_type == rel.cell_type and normalise_source(cell.source) == target:
                attach(i, gid, "matched by source")
                break

    # 3. solution cells by position between matched neighbours and by the names they define
    for k, gid in enumerate(order):
        rel = rel_by_id[gid]
        if gid in present() or not rel.metadata["nbgrader"].get("solution"):
            continue
        where = present()
        before = [where[g] for g in order[:k] if g in where]
        after = [where[g] for g in order[k + 1 :] if g in where]
        lo = max(before) if before else -1
        hi = min(after) if after else len(nb.cells)
        window = [i for i in range(lo + 1, hi) if free(i) and nb.cells[i].cell_type == rel.cell_type]
        names = stub_names(rel.source)
        pick = None
        if names:
            named = [i for i in window if set(names) & set(stub_names(nb.cells[i].source))]
            pick = named[-1] if named else None  # the last definition is the one the tests see
        if pick is None and rel.cell_type == "markdown" and len(window) > 1:
            pick = _written_answer(nb, window, rel, gid, notes)
        if pick is None:
            same = [i for i in window if normalise_source(nb.cells[i].source) == normalise_source(rel.source)]
            pick = same[0] if same else (window[0] if len(window) == 1 else None)
        if pick is not None:
            attach(pick, gid, "matched by position" + (f" and `{names[0]}`" if names else ""))
            continue
        # Not between its neighbours: the answer cell was deleted and the function retyped in a new cell
        # elsewhere. Above its test it runs in time where it is; below, it is moved up to just before it.
        elsewhere = [
            i
            for i in range(len(nb.cells))
            if free(i)
            and nb.cells[i].cell_type == rel.cell_type
            and names
            and set(names) & set(stub_names(nb.cells[i].source))
        ]
        if elsewhere:
            i = elsewhere[-1]
            if i < hi:
                attach(i, gid, f"found above its place, defines `{names[0]}`")
            else:
                nb.cells.insert(hi, nb.cells.pop(i))
                attach(hi, gid, f"moved up from cell {i}, defines `{names[0]}`")

    # 4. put back deleted locked cells (tests and read-only instructions)
    for k, gid in enumerate(order):
        rel = rel_by_id[gid]
        md = rel.metadata["nbgrader"]
        if gid in present() or md.get("solution") or not md.get("locked"):
            continue
        where = present()
        before = [where[g] for g in order[:k] if g in where]
        at = max(before) + 1 if before else 0
        nb.cells.insert(at, copy.deepcopy(rel))
        notes.append(f"cell {at}: deleted cell '{gid}' put back from the release")

    # 5. ids and kernel
    used: set[str] = set()
    if nb.get("nbformat_minor", 0) < 5:
        nb.nbformat_minor = 5
    for i, cell in enumerate(nb.cells):
        cid = cell.get("id")
        if not cid or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(cid)) or cid in used:
            new = f"cell-{i}"
            while new in used:
                new += "x"
            if cid:
                notes.append(f"cell {i}: duplicate or invalid cell id '{cid}' renamed")
            cell["id"] = new
        used.add(cell["id"])
    ks = nb.metadata.get("kernelspec", {})
    if ks.get("name") != "python3":
        if ks:
            notes.append(f"kernel '{ks.get('name')}' replaced by python3")
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
    missing = [g for g in order if rel_by_id[g].metadata["nbgrader"].get("solution") and g not in present()]
    if missing:
        notes.append(f"no answer cell found for {missing} (scored as not answered)")
    nbf.validate(nb)
    return notes
