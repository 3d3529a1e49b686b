"""Claims a lab's text makes about its own outputs, checked on the run that produced them (issue 26).

A sentence such as "the skips matter most when there is little noise" is true only if this run shows it. So
each sentence that states what a picture or a number shows has a ``claims.check`` right under that output:

    gap = {s: mse_without[s] / mse_with[s] for s in SIGMAS}
    claims.check("the skips help most on almost clean input", gap[0.1] == max(gap.values()),
                 f"error ratio without/with skips: {fmt(gap)}")

It prints one line saying whether this run supports the sentence, with the numbers, so a student never reads a
sentence that the output under it contradicts without being told. The normal-mode test of each lab
(``tests/test_claims_normal.py``) runs the lab as a student would and fails when a claim does not hold, so the
text and the outputs cannot drift apart unnoticed. In fast mode (grading, CI) the outputs are too small to mean
anything: the claim is named, not checked.

Where the outcome depends on the run (a sentence that holds on most runs, not all), the text should ask the
student to look ("does the plot support ...?") instead of asserting, and have no claim.
"""

from __future__ import annotations

from labkit import colab

HOLDS = "holds on this run"
DOES_NOT_HOLD = "DOES NOT HOLD on this run"
NOT_CHECKED = "not checked in fast mode"


def check(claim: str, holds, evidence: str = "") -> bool:
    """Print whether this run supports ``claim`` (a sentence of the text), with ``evidence`` (the numbers).

    Returns ``holds`` as a bool (``True`` in fast mode, where nothing is checked), so that a cell can go on
    differently when a claim fails."""
    if not isinstance(claim, str) or not claim.strip():
        raise TypeError("claims.check needs the claim as a sentence (a non-empty str)")
    evidence = f" ({evidence})" if evidence else ""
    if colab.fast_mode():
        print(f"Claim, {NOT_CHECKED}: {claim}.")
        return True
    holds = bool(holds)  # a numpy or torch bool too; a tensor of several values raises here
    if holds:
        print(f"Claim {HOLDS}: {claim}{evidence}.")
    else:
        print(
            f"Claim {DOES_NOT_HOLD}: {claim}{evidence}. The text says this of a typical run; "
            "answer the questions from what your run shows."
        )
    return holds


def outcomes(text: str) -> dict[str, list[str]]:
    """The claims printed in ``text`` (a notebook's outputs), by outcome: ``{"holds": [...], "fails": [...],
    "unchecked": [...]}``. Used by the normal-mode tests and the docs."""
    found = {"holds": [], "fails": [], "unchecked": []}
    for line in text.splitlines():
        for key, marker in (
            ("holds", f"Claim {HOLDS}: "),
            ("fails", f"Claim {DOES_NOT_HOLD}: "),
            ("unchecked", f"Claim, {NOT_CHECKED}: "),
        ):
            if line.startswith(marker):
                found[key].append(line[len(marker) :])
    return found
