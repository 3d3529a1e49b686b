"""``labkit grade --scheduler ADDRESS`` / ``--cluster local:N``: the grading pipeline's tasks on Dask.

Imported only when one of those options is given (``pip install 'labkit[cluster]'``: dask.distributed).

The steps are the pipeline's (``labkit.course.pipeline``: prepare, grade, merge), the same as on one machine;
only the executor differs. Who does what:

* **the client** (the machine that runs ``labkit grade``) finds the submissions and makes a clean *template*
  course per lab with nbgrader's generate_assignment (source and release notebooks, a gradebook that knows
  the assignment and no student; ~14 kB zipped, cached in ``OUT/.cluster-templates/``), which travels to the
  workers as bytes inside each task; the lab's course in ``OUT/nbgrader/<lab>/`` starts as a copy of it (and
  is generated again when the lab's source changed). It submits one task per submission that the manifest
  does not hold, at most a few per worker thread at a time,
  and it is the **only writer** of everything under ``OUT``: for each result it writes the submitted and
  autograded notebooks into the lab's course, records the scores in that course's ``gradebook.db`` with
  nbgrader's own ``SaveAutoGrades`` and ``AssignLatePenalties`` run on the autograded notebook (what
  nbgrader's autograde does after executing: the formgrader then sees an ordinary autograded submission),
  and only then appends the submission to the manifest. Feedback is generated once per lab at the end.
* **a worker** runs ``grade_task``: it checks that it can start the bubblewrap sandbox (unless the client
  passed ``--unsafe-no-sandbox``) and that its labkit grades like the client's (same fingerprint of the
  grading code), unpacks the template into a private temporary course, runs the very function the local
  path runs (``autograde.grade_one_submission``: restore, autograde in the sandboxed kernel, judge the test
  cells, read the scores), and returns data only. It never sees the client's files; a worker that dies
  mid-notebook leaves nothing behind but its own temporary folder.

Exactly once: a task's key is ``(lab, student, sha256 of the notebook)``, and the tasks go through
``client.get_executor()``, a ``concurrent.futures`` executor, in the pipeline's one loop (``grade_with``).
Dask gives each future one result (a task whose worker died is run again elsewhere, up to
``allowed-failures`` deaths; so is one whose result died with its worker after it was computed and before
the client fetched it: the client's fetch asks the scheduler to compute it again and waits, and only then does
the executor's future answer); the client merges each future's one answer once. The merge commits the scores together with a record of the
merge (``labkit_merged`` in the lab's gradebook.db), and then appends the record to
``OUT/cluster-manifest.jsonl`` (one JSON line per merged submission, fsynced). A later run first copies into
the manifest any record the gradebook holds and the manifest lacks (the client died between the two), then
skips every submission whose notebook hash and grader fingerprint (lab source, grading code, timeout, memory
cap, sandbox) are in the manifest and whose autograded notebook is still there; it grades only what is
missing or changed.
"""

from __future__ import annotations

import contextlib
import sys
import time

from labkit.course.executors import ALLOWED_FAILURES, LOCAL_RE, connect, dashboard_link  # noqa: F401
from labkit.course.manifest import (  # noqa: F401
    GRADING_MODULES,
    MANIFEST_NAME,
    Manifest,
    code_fingerprint,
    grader_fingerprint,
    task_key,
)
from labkit.course.merge import MERGED_TABLE, merge_result, merged_in_gradebook  # noqa: F401
from labkit.course.pipeline import (  # noqa: F401
    GradingStats,
    Pending,
    sha256_of,
    fail_one,
    grade_with,
    merge_one,
    prepare,
    read_task_input,
    run_pipeline,
    task_failure,
)
from labkit.course.results import GradeResult
from labkit.course.settings import GradingSettings
from labkit.course.task import WORKER_STATE, WorkerUnfit, worker_where, grade_task, pack_course, worker_probe  # noqa: F401
from labkit.errors import LabkitError

ClusterStats = GradingStats  # (its name before the local path used it too)
_task_failure = task_failure


def grade_on_cluster(subs, chosen, empty, empty_labs, releases, courses, **kw) -> list[GradeResult]:
    """``pipeline.run_pipeline`` with a Dask ``scheduler`` (a keyword argument; ``local:N`` for a LocalCluster)."""
    import functools

    scheduler = kw.pop("scheduler")
    kw.update(grade_pending=functools.partial(grade_on_dask, scheduler=scheduler), where=" on the cluster")
    return run_pipeline(subs, chosen, empty, empty_labs, releases, courses, **kw)


def grade_on_dask(
    pending: list[Pending],
    chosen,
    courses,
    st: GradingStats,
    manifest: Manifest,
    merged_labs: set,
    progress,
    *,
    repo_root,
    out_dir,
    settings: GradingSettings,
    jobs,
    verbose,
    scheduler,
) -> None:
    """Step 2 of the pipeline on Dask: connect, check the workers, prepare, then submit and merge."""
    # 1. the cluster, and whether its workers can grade (before any work here: a refusal comes at once)
    t0 = time.monotonic()
    client, cluster = connect(scheduler)
    st.connect_seconds = time.monotonic() - t0
    try:
        link = dashboard_link(client)
        code = code_fingerprint()
        probes = client.run(worker_probe)
        st.workers = len(probes)
        if verbose:
            where = "a local cluster" if cluster is not None else scheduler
            print(f"Dask: {len(probes)} worker(s) on {where}" + (f"; dashboard: {link}" if link else ""), flush=True)
            if not probes:
                print("note: no worker is connected yet; the tasks wait for one", flush=True)
        unfit = {
            w: (
                p["sandbox"]
                if settings.sandbox and p["sandbox"]
                else None
                if p["code"] == code
                else "its labkit grading code differs from the client's"
            )
            for w, p in probes.items()
        }
        for w, why in unfit.items():
            if why:
                print(f"warning: worker {w} cannot grade: {why}", file=sys.stderr, flush=True)
        if probes and all(unfit.values()):
            raise LabkitError(f"no worker can grade: {next(iter(unfit.values()))}")

        # 2. the template course per lab (the same step as the local path)
        templates = prepare(
            pending, chosen, courses, st, repo_root=repo_root, out_dir=out_dir, jobs=jobs, settings=settings
        )
        for p in pending:
            if p.res.lab not in templates:
                progress.done(p.res)

        # 3. one task per submission on Dask's concurrent.futures executor; results merged here as they come
        todo = [p for p in pending if p.res.lab in templates]
        if todo:
            executor = client.get_executor(pure=False, retries=0)
            window = _Window(client)
            grade_with(
                executor, todo, templates, courses, code, st, manifest, merged_labs, progress,
                settings=settings, window=window, task=grade_task, merge=merge_result, keyed=True,
            )  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


class _Window:
    """How many tasks to keep submitted: three per worker thread (at least 16), asked of the scheduler at
    most every 5 seconds (workers may join or leave while the class is graded)."""

    def __init__(self, client):
        self.client, self.size, self.asked = client, 16, float("-inf")

    def __call__(self) -> int:
        if time.monotonic() - self.asked > 5:
            self.asked = time.monotonic()
            try:
                self.size = max(16, 3 * sum(self.client.nthreads().values()))
            except Exception:  # the scheduler is briefly unreachable: keep the last size
                pass
        return self.size
