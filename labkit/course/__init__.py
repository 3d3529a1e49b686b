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
submitted notebook), ``grade`` (finding, autograding and reporting submissions), ``cli``.
"""

from labkit.course.sources import (
    SOURCE_DIR,
    STUDENT_DIR,
    KERNELSPEC,
    DEFAULT_TIMEOUT,
    DEFAULT_MEMORY_LIMIT_GB,
    BEGIN_HIDDEN,
    SOLUTION_RE,
    ALLOWED_BESIDE_SOURCE,
    find_repo_root,
    discover_labs,
    _select,
    validate_nbgrader_metadata,
    source_to_notebook,
    notebook_json,
)
from labkit.course.nbgrader_setup import (
    RedactHiddenTestOutputs,
    RELOAD_CHECKS,
    guarded_execute_class,
    configure_nbgrader,
)
from labkit.course.build import (
    BuiltLab,
    render_labs,
    build_notebooks,
    check_notebooks_fresh,
)
from labkit.course.restore import (
    restore_submission,
)
from labkit.course.grade import (
    Submission,
    GradeResult,
    find_submissions,
    grade_submissions,
    MEMORY_ERRORS,
    execution_report,
    TAMPER_ROOTS,
    tampering_notes,
    write_scores_csv,
)
from labkit.course.cli import (
    add_build_arguments,
    add_grade_arguments,
    cli_build,
    cli_grade,
    main,
)

__all__ = [
    "SOURCE_DIR",
    "STUDENT_DIR",
    "KERNELSPEC",
    "DEFAULT_TIMEOUT",
    "DEFAULT_MEMORY_LIMIT_GB",
    "BEGIN_HIDDEN",
    "SOLUTION_RE",
    "ALLOWED_BESIDE_SOURCE",
    "find_repo_root",
    "discover_labs",
    "_select",
    "validate_nbgrader_metadata",
    "source_to_notebook",
    "notebook_json",
    "RedactHiddenTestOutputs",
    "RELOAD_CHECKS",
    "guarded_execute_class",
    "configure_nbgrader",
    "BuiltLab",
    "render_labs",
    "build_notebooks",
    "check_notebooks_fresh",
    "restore_submission",
    "Submission",
    "GradeResult",
    "find_submissions",
    "grade_submissions",
    "MEMORY_ERRORS",
    "execution_report",
    "TAMPER_ROOTS",
    "tampering_notes",
    "write_scores_csv",
    "add_build_arguments",
    "add_grade_arguments",
    "cli_build",
    "cli_grade",
    "main",
]
