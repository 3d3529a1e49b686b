"""Inert HTML everywhere a person looks (issue 23, item 3): a submission's markup never runs in the browser
of whoever reads it.

Five payloads, as a hostile student writes them: ``<script>``, ``<img onerror>``, ``<iframe srcdoc>`` and a
``javascript:`` link in written answers, and ``display(Javascript(...))`` / ``display(HTML(...))`` outputs.
Each runs ``attack(kind)`` when it runs: it marks ``window``, then, with the formgrader's ``_xsrf`` cookie,
gives its own written answers full marks plus extra credit through the formgrader's REST API and writes a
file into the course folder through Jupyter's contents API (what the issue's red team did).

Fast (default run): the formgrader's page of a submission, nbgrader's feedback and ``labkit report``, rendered
with labkit's settings, hold no payload that could run (and, as a control, they all do without them).
Extended: the real formgrader in headless Chromium, logged in as the instructor, on a submission graded by
``labkit grade``; no payload runs, and the gradebook and the course folder are unchanged afterwards (and the
same attack run by the test itself does change them: the check can see an attack that works).
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[1]

# lab 01's autograded points, read from the release (its graded code cells): what an honest notebook scores
FULL01 = float(sum(c.metadata["nbgrader"]["points"] for c in nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"),
                                                                           as_version=4).cells
                   if c.cell_type == "code" and (c.metadata.get("nbgrader") or {}).get("grade")))

LAB = "lab01_forward"
MARK = "PWN"


def attack(kind: str) -> str:
    """JavaScript of a student who wants points: mark the page, grade itself, write into the course folder."""
    return f"""
window.{MARK}_{kind} = 1; try {{ parent.{MARK}_{kind} = 1; }} catch (e) {{}}
(async () => {{
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
  const headers = {{'Content-Type': 'application/json', 'X-XSRFToken': decodeURIComponent(xsrf)}};
  await fetch('/api/contents/pwned-{kind}.txt', {{method: 'PUT', headers,
      body: JSON.stringify({{type: 'file', format: 'text', content: 'owned'}})}});
  const subs = await (await fetch('/formgrader/api/submitted_notebooks/{LAB}/{LAB}')).json();
  for (const s of subs) {{
    const grades = await (await fetch('/formgrader/api/grades?submission_id=' + s.id)).json();
    for (const g of grades) {{
      await fetch('/formgrader/api/grade/' + g.id, {{method: 'PUT', headers,
          body: JSON.stringify({{manual_score: g.max_score, extra_credit: 10}})}});
    }}
  }}
}})();
"""


def _run_js(kind: str) -> str:
    return f"eval(atob('{base64.b64encode(attack(kind).encode()).decode()}'))"


WRITTEN = {  # one per written answer of lab 01 (4 answers)
    "script": lambda: f"My answer. <script>{_run_js('script')}</script>",
    "img": lambda: f'My answer. <img src="x" onerror="{_run_js("img")}">',
    "iframe": lambda: f'My answer. <iframe srcdoc="<script>{_run_js("iframe")}</script>"></iframe>',
    "link": lambda: (f"My answer, see [{MARK}-link](javascript:{_run_js('link')}) and "
                     f"<a href=\"javascript:{_run_js('anchor')}\">{MARK}-anchor</a>."),
}
HTML_OUTPUT = f"<b onmouseover=\"{_run_js('html')}\">hover</b><script>{_run_js('html2')}</script>"
OUTPUT_CELL = (f"from IPython.display import display, HTML, Javascript\n"
               f"display(Javascript({_run_js('js')!r}))\n"
               f"display(HTML({HTML_OUTPUT!r}))\n")


class _LiveMarkup(HTMLParser):
    """Collects every place in a page where a payload would run: a script, an event attribute, a frame's
    document or a javascript: address that holds one (escaped text does not count: it is only shown)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") and "atob(" in value:
                self.found.append(f"<{tag} {name}>")
            if name in ("href", "src", "action", "formaction") and value.strip().lower().startswith(("javascript:", "data:text")):
                self.found.append(f"<{tag} {name}={value[:30]}>")
            if name == "srcdoc" and "atob(" in value:
                self.found.append(f"<{tag} srcdoc>")
        self._script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = False

    def handle_data(self, data):
        if self._script and "atob(" in data:
            self.found.append("<script>" + data.strip()[:30])


def live_payloads(html: str) -> list[str]:
    parser = _LiveMarkup()
    parser.feed(html)
    return parser.found


def hostile_notebook(outputs: bool = True) -> nbformat.NotebookNode:
    """Lab 01's release with the solution's code, the four payloads as written answers and, when
    ``outputs``, a code cell whose outputs are the Javascript and HTML payloads (as a kernel leaves them)."""
    release = nbformat.read(str(REPO / "notebooks" / f"{LAB}.ipynb"), as_version=4)
    solution = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    code = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
            if c.cell_type == "code" and (c.metadata.get("nbgrader") or {}).get("solution")}
    nb = copy.deepcopy(release)
    answers = iter(WRITTEN.values())
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader") or {}
        if md.get("grade_id") in code:
            cell.source = code[md["grade_id"]]
        elif cell.cell_type == "markdown" and md.get("solution"):
            cell.source = next(answers)()
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    cell = nbformat.v4.new_code_cell(OUTPUT_CELL)
    if outputs:
        cell.outputs = [
            nbformat.v4.new_output("display_data", data={"application/javascript": _run_js("js"), "text/plain": "<js>"}),
            nbformat.v4.new_output("display_data", data={"text/html": HTML_OUTPUT, "text/plain": "<html>"}),
        ]
    nb.cells.insert(first + 1, cell)
    return nb


KINDS = {"script", "img", "iframe", "link", "anchor", "js", "html", "html2"}


def _formgrader_page(config: Config) -> str:
    """The page nbgrader's formgrader serves for a submission (its exporter, template and resources)."""
    from nbconvert import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers

    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    resources = {"assignment_id": LAB, "notebook_id": LAB, "submission_id": "1", "index": 0, "total": 1,
                 "base_url": "", "student": "s", "last_name": "", "first_name": "", "notebook_path": "x"}
    html, _ = HTMLExporter(config=config).from_notebook_node(hostile_notebook(), resources=resources)
    return html


def test_the_formgrader_page_of_a_submission_is_inert():
    from labkit.course.nbgrader_setup import configure_nbgrader

    assert live_payloads(_formgrader_page(configure_nbgrader(Config()))) == []


def test_without_labkits_settings_every_payload_would_run():
    # the control: nbgrader's formgrader as it comes, and this test's detector finding what would run there
    found = live_payloads(_formgrader_page(Config()))
    assert len(found) >= 7, found


def test_the_feedback_labkit_writes_is_inert(tmp_path):
    """nbgrader's generate_feedback with labkit's settings (what ``labkit grade`` runs) on an autograded
    hostile submission: the written answers are still there, as text; nothing in the page would run."""
    from nbgrader.api import Gradebook

    from labkit.course.autograde import feedback_lab, prepare_lab

    course = tmp_path / "course"
    prepare_lab(str(REPO), LAB, str(course))
    target = course / "autograded" / "mallory" / LAB
    target.mkdir(parents=True)
    nbformat.write(hostile_notebook(), str(target / f"{LAB}.ipynb"))
    (course / "submitted" / "mallory" / LAB).mkdir(parents=True)
    shutil.copy(target / f"{LAB}.ipynb", course / "submitted" / "mallory" / LAB / f"{LAB}.ipynb")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.add_student("mallory")
        gb.add_submission(LAB, "mallory")
    assert feedback_lab(str(course), LAB) is None
    page = (course / "feedback" / "mallory" / LAB / f"{LAB}.html").read_text(encoding="utf-8")
    assert "My answer" in page and f"{MARK}-anchor" in page  # the student's words are shown ...
    assert live_payloads(page) == []  # ... and none of them runs


def test_labkit_report_is_inert(tmp_path):
    from labkit.course.export import export_html

    src = tmp_path / "report.ipynb"
    nbformat.write(hostile_notebook(), str(src))
    out, _ = export_html(src)
    page = out.read_text(encoding="utf-8")
    assert "My answer" in page and live_payloads(page) == []
    assert "data:image/png;base64" in page or "<img" not in page  # pictures of outputs still embedded


# --- the real formgrader in headless Chromium (extended) --------------------------------------------------


@pytest.fixture(scope="module")
def graded_hostile(tmp_path_factory):
    from conftest import grade_folder, sandbox_problem

    if sandbox_problem():
        pytest.skip(f"grading sandbox unavailable: {sandbox_problem()}")
    tmp = tmp_path_factory.mktemp("inert")
    subs = tmp / "subs"
    (subs / "mallory").mkdir(parents=True)
    nbformat.write(hostile_notebook(outputs=False), str(subs / "mallory" / f"{LAB}.ipynb"))  # the kernel makes them
    (subs / "honest").mkdir(parents=True)
    shutil.copy(REPO / "solutions" / LAB / f"{LAB}.ipynb", subs / "honest" / f"{LAB}.ipynb")
    results = {r.student: r for r in grade_folder(subs, tmp / "out", [LAB], jobs=2, verbose=False)}
    return results, tmp / "out" / "nbgrader" / LAB, tmp


def _gradebook_state(course: Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {(s, g.name): (g.manual_score, g.extra_credit) for s in ("mallory", "honest")
                for g in gb.find_submission(LAB, s).notebooks[0].grades}


def _course_files(course: Path) -> set[str]:
    return {str(p.relative_to(course)) for p in course.rglob("*")
            if not p.name.endswith(("-journal", "-wal", "-shm")) and ".ipynb_checkpoints" not in p.parts}


@pytest.mark.slow
@pytest.mark.nbgrader
@pytest.mark.browser
@pytest.mark.extended
def test_no_payload_runs_in_the_instructors_formgrader(graded_hostile, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from test_browser import _which
    from test_written_answers import Formgrader

    results, course, tmp = graded_hostile
    assert results["honest"].score == FULL01 and results["mallory"].score == FULL01, [r.line() for r in results.values()]
    chromium, driver_bin = _which("chromium", "chromium-browser", "google-chrome"), _which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    autograded = (course / "autograded" / "mallory" / LAB / f"{LAB}.ipynb").read_text()
    assert "application/javascript" in autograded and "onmouseover" in autograded  # the kernel made the outputs
    before_grades, before_files = _gradebook_state(course), _course_files(course)
    server = Formgrader(course, tmp / "formgrader.log")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-extensions", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    driver.set_page_load_timeout(60)
    try:
        driver.get(f"{server.base}/formgrader?token={server.token}")  # logged in, as the instructor is
        subs = server.call("GET", f"/formgrader/api/submitted_notebooks/{LAB}/{LAB}")
        assert {s["student"] for s in subs} == {"mallory", "honest"}
        ran = {}
        for sub in sorted(subs, key=lambda s: s["student"]):
            driver.get(f"{server.base}/formgrader/submissions/{sub['id']}/?index=0")
            time.sleep(3)  # time for any script, image error or frame to run, and for its requests
            body = driver.find_element(By.TAG_NAME, "body").text
            if sub["student"] == "mallory":
                assert "My answer" in body and f"{MARK}-anchor" in body  # shown, as text
                for link in driver.find_elements(By.PARTIAL_LINK_TEXT, f"{MARK}-"):
                    link.click()  # a javascript: link runs only when clicked
                time.sleep(2)
            ran[sub["student"]] = driver.execute_script(
                f"return Object.keys(window).filter(k => k.startsWith('{MARK}_'))")
        time.sleep(2)
        after_grades, after_files = _gradebook_state(course), _course_files(course)
        assert ran == {"mallory": [], "honest": []}, ran
        assert after_grades == before_grades
        assert after_files == before_files, after_files ^ before_files

        # The control: the same attack, run by the test in the same logged-in page, does get through.
        driver.execute_script(attack("control"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (course / "pwned-control.txt").exists():
            time.sleep(0.5)
        time.sleep(2)
        assert (course / "pwned-control.txt").exists()
        assert _gradebook_state(course) != before_grades
    finally:
        driver.quit()
        server.close()
