# nbgrader configuration for instructors who drive nbgrader directly (formgrader, `nbgrader autograde`, ...).
#
# `labkit build` and `labkit grade` do not read this file: they apply the same settings in-process through
# labkit.course.GradingSettings (labkit/course/settings.py). Run nbgrader commands from the repository root:
#
#   nbgrader generate_assignment lab01_forward     # solutions/lab01_forward/lab01_forward.ipynb -> release/
#   nbgrader autograde lab01_forward               # submitted/<student>/lab01_forward/lab01_forward.ipynb
#   nbgrader generate_feedback lab01_forward
#
# Prefer `labkit build` (it also rebuilds the .ipynb from the .py source and writes notebooks/) and
# `labkit grade SUBMISSIONS` (it also restores lost metadata, handles LMS downloads and writes a CSV).
#
# What GradingSettings().configure sets (see labkit/course/settings.py and nbgrader_setup.py):
#   CourseDirectory.ignore          includes "*.py": the jupytext sources beside each source notebook hold
#                                   the full solutions and must never be copied into a release
#   Execute.timeout (120 s)         finite per-cell timeout (nbgrader's default of 30 s is too short for a
#                                   torch import on a busy grader, and None would hang on an infinite loop)
#   Execute.kernel_name = python3   whatever kernel name a student's notebook carries (nbgrader #1375)
#   Execute.interrupt_on_timeout    a timed-out cell fails; the rest of the notebook still runs
#   GuardedExecute                  replaces nbgrader's Execute step: a kernel that dies (os._exit, OOM) or
#                                   ignores the interrupt fails only its cell, is restarted, and grading goes on;
#                                   memory_limit_gb (default 4) caps each kernel's memory (Linux, RLIMIT_DATA)
#   OverwriteCells.add_missing_cells = True   deleted test cells come back (nbgrader #1682)
#   GenerateFeedback.preprocessors  GetGrades, RedactHiddenTestOutputs, ClearHiddenTests, CSS: feedback shows
#                                   whether hidden tests passed, never their code or their tracebacks
#   GuardedExecute.notebook_timeout (600)   seconds for a whole notebook; later cells are not run (tests: 0)
#   HTMLExporter (labkit.course.inert)      inert HTML: the formgrader's view of a submission and the feedback
#                                   never run a student's script, event attribute, frame or javascript: link
#
# Notebooks gate expensive cells on labkit.colab.fast_mode(), which is on while nbgrader executes them
# (nbgrader sets NBGRADER_EXECUTION); export LABKIT_FAST=1 as well when grading from the command line.

from labkit.course import GradingSettings

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

GradingSettings().configure(c)  # the defaults of `labkit grade`: change them there, in one place

c.CourseDirectory.root = "."
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
