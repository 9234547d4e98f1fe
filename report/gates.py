"""Whether a measurement can carry a verdict: one gate per kind of evidence, in one place.

Every sentence of the report that draws a conclusion from a run ("sharper", "agrees", "collapsed", "higher
than the baseline", t*) first asks its gate. A gate answers `Gate(tells, why)`: `tells` when the measurement
can decide, else `why` says plainly what is missing ("the digit classifier is at chance (6.2% on 64 test
images, chance 10%)"), and the text prints `cannot(question, gate)` instead of the verdict.

The three kinds:
- `interval_excludes_tie`: a 95% interval for a difference must exclude the tie (0 for a difference);
  `proportion_difference` gives that interval for two accuracies on the same test images.
- `above_chance`: a classifier or probe must beat chance by `CHANCE_MARGIN` points, and its 95% Wilson
  interval must lie above chance, on the images it was tested on.
- `enough`: enough images, steps or epochs for a statistic to mean something (the minimum is the caller's,
  and the sentence states it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964           # two-sided 95% normal quantile
CHANCE_MARGIN = 0.10     # a classifier must beat chance by at least 10 points to read samples
TEN_CLASSES = 0.1        # chance accuracy for ten balanced classes


@dataclass(frozen=True)
class Gate:
    """Whether a measurement can tell; `why` says why not (empty when it can)."""
    tells: bool
    why: str = ""

    @property
    def short(self) -> str:
        """The reason's first clause, for the answer sheet: 'the digit classifier is at chance'."""
        return self.why.split(" (")[0].split(";")[0].split(", so ")[0]


TELLS = Gate(True)


def first_failing(*gates: Gate) -> Gate:
    """The first gate that cannot tell, else TELLS: a verdict resting on several measurements needs them all."""
    return next((g for g in gates if not g.tells), TELLS)


def cannot(question: str, gate: Gate) -> str:
    """The sentence printed instead of a verdict: 'this run cannot tell <question>: <why>'."""
    return f"this run cannot tell {question}: {gate.why}"


def _pct(x: float) -> str:
    """A fraction as LaTeX percent with at most one decimal: 0.0625 -> 6.2\\%, 0.5 -> 50\\%."""
    text = f"{100 * x:.1f}".removesuffix(".0")
    return text + "\\%"


def counted(n: int, one: str, many: str | None = None) -> str:
    """'1 image', '2 images', '0 images': a count with its noun in the right number."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


# --------------------------------------------------------------------------- interval excludes the tie

def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion p measured on n trials (Wilson 1927); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_difference(p1: float, n1: int, p2: float, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of p1 - p2 for two accuracies (Newcombe 1998, method 10: from the two Wilson intervals).
    On the same test images the two outcomes are positively correlated, so this unpaired interval is
    conservative: a difference it excludes from 0 the paired one excludes too."""
    l1, u1 = wilson(p1, n1, z)
    l2, u2 = wilson(p2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def interval_excludes_tie(low: float, high: float, what: str, tie: float = 0.0, unit: str = "") -> Gate:
    """A difference's 95% interval [low, high] tells a direction only when it excludes the tie."""
    if low > tie or high < tie:
        return TELLS
    return Gate(False, f"the 95\\% interval of {what}, [{_signed(low)}, {_signed(high)}]{unit}, includes "
                       f"no difference")


def _signed(x: float) -> str:
    text = f"{x:+.1f}"
    return ("$-$" + text[1:]) if text.startswith("-") else text


def points_differ(p1: float, n1: int, p2: float, n2: int, what: str) -> Gate:
    """Two accuracies differ when the 95% interval of their difference (in points) excludes 0."""
    low, high = proportion_difference(p1, n1, p2, n2)
    return interval_excludes_tie(100 * low, 100 * high, what, unit=" points")


# --------------------------------------------------------------------------- above chance

def above_chance(accuracy: float | None, n: int | None, who: str, chance: float = TEN_CLASSES,
                 margin: float = CHANCE_MARGIN) -> Gate:
    """A classifier (or probe) can read images only when it beats chance by `margin` and its 95% Wilson
    interval on the n test images lies above chance."""
    if accuracy is None or n is None or not math.isfinite(accuracy) or n <= 0:
        return Gate(False, f"{who}'s test accuracy was not measured")
    low, _ = wilson(accuracy, n)
    if accuracy < chance + margin or low <= chance:
        state = "at chance" if accuracy < chance + margin else "not shown above chance"
        return Gate(False, f"{who} is {state} ({_pct(accuracy)} on {counted(n, 'test image')}, chance "
                           f"{_pct(chance)}; it must beat chance by {round(100 * margin)} points, with its 95\\% "
                           "interval above chance)")
    return TELLS


# --------------------------------------------------------------------------- enough

def enough(count: int | None, minimum: int, one: str, purpose: str, many: str | None = None) -> Gate:
    """A statistic over `count` items (images, steps, epochs) means something from `minimum` on."""
    if count is None:
        return Gate(False, f"the number of {many or one + 's'} was not recorded")
    if count >= minimum:
        return TELLS
    return Gate(False, f"{counted(count, one, many)}, fewer than the {minimum} {purpose} needs")
