"""Build the student notebooks from the lab sources, and grade a folder of submissions with nbgrader.

Layout (one nbgrader assignment per lab; a lab is any folder ``solutions/<lab>/`` holding ``<lab>.py``):

    solutions/<lab>/<lab>.py      the source: a jupytext "percent" script, ``# %% nbgrader={...}`` headers
    solutions/<lab>/<lab>.ipynb   built from it (nbgrader's source notebook, instructor-only: has solutions)
    notebooks/<lab>.ipynb         built by nbgrader generate_assignment: what students get

``build_notebooks`` writes both built forms; ``check_notebooks_fresh`` reports what is stale (a test runs
it). ``grade_submissions`` grades a folder of submitted notebooks in a fresh nbgrader course folder:
restores lost nbgrader metadata, removes duplicate ids, autogrades with finite timeouts, writes feedback
HTML without hidden tests and a CSV of scores, and reports per student what happened.

Command line: ``labkit build`` / ``labkit grade SUBMISSIONS`` (or ``python -m labkit.course build|grade``).
nbgrader, jupytext and nbconvert come with the "instructor" extra: ``pip install -e '.[instructor]'``.

Modules, lowest first (each imports only the ones before it):
``sources`` (where labs live; .py source -> notebook), ``nbgrader_setup`` (configuration, guarded executor,
feedback redaction), ``build`` (solution + student notebooks, freshness check), ``restore`` (repairing a
submitted notebook), ``pipeline`` (prepare -> grade -> merge, with ``manifest``, ``task``, ``merge`` and
``executors``: local processes, or Dask through ``cluster`` for ``labkit grade --scheduler ADDRESS`` or
``--cluster local:N``, with ``pip install 'labkit[cluster]'``), ``grade`` (finding, grading and reporting
submissions), ``cli``.
"""

# Names are imported on first use (PEP 562): importing one submodule, e.g. the kernel-side half of
# grading inside a student's kernel, must not pull in nbgrader and nbconvert.
_EXPORTS = {
    "SOURCE_DIR": "sources",
    "STUDENT_DIR": "sources",
    "KERNELSPEC": "sources",
    "DEFAULT_TIMEOUT": "sources",
    "DEFAULT_NOTEBOOK_TIMEOUT": "sources",
    "DEFAULT_MEMORY_LIMIT_GB": "sources",
    "BEGIN_HIDDEN": "sources",
    "SOLUTION_RE": "sources",
    "ALLOWED_BESIDE_SOURCE": "sources",
    "find_repo_root": "sources",
    "discover_labs": "sources",
    "select_labs": "sources",
    "validate_nbgrader_metadata": "sources",
    "source_to_notebook": "sources",
    "notebook_json": "sources",
    "RedactHiddenTestOutputs": "nbgrader_setup",
    "guarded_execute_class": "nbgrader_setup",
    "configure_nbgrader": "nbgrader_setup",
    "GradingSettings": "settings",
    "BuiltLab": "build",
    "render_labs": "build",
    "build_notebooks": "build",
    "check_notebooks_fresh": "build",
    "restore_submission": "restore",
    "Submission": "discover",
    "GradeResult": "results",
    "Status": "results",
    "find_submissions": "discover",
    "grade_submissions": "grade",
    "MEMORY_ERRORS": "forensics",
    "execution_report": "forensics",
    "TAMPER_ROOTS": "forensics",
    "tampering_notes": "forensics",
    "write_scores_csv": "results",
    "add_build_arguments": "cli",
    "add_grade_arguments": "cli",
    "cli_build": "cli",
    "cli_grade": "cli",
    "main": "cli",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
