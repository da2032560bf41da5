"""Markdown for the generated documents, shared by every tool that writes one (report, tune, pretext table):
numbers, intervals and p-values as the tables print them, and the text between a document's markers."""

from __future__ import annotations

from pathlib import Path

from selfsup.core.params import UserError


def first_paragraph(doc: str) -> str:
    """A docstring's first paragraph on one line: what a command's `-h` prints as its description."""
    return " ".join(doc.split("\n\n")[0].split())


def num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def ci(s: dict, digits: int = 4) -> str:
    """A mean with its interval: `0.7222 [0.7170, 0.7275]` (the mean alone with one seed)."""
    if s["ci_low"] is None:
        return num(s["mean"], digits)
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def p_value(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def epochs(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f}"


def splice(text: str, section: str, begin: str, end: str, name: Path = Path("README.md")) -> str:
    """`text` (of the file `name`) with what lies between the markers replaced by `section`."""
    if begin not in text or end not in text:
        raise UserError(f"{name} lacks the markers {begin} ... {end}: put them where the generated text goes")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{section}{end}{tail}"


def readme_section(text: str, begin: str, end: str) -> str:
    """What lies between the markers."""
    return text.split(begin, 1)[1].split(end, 1)[0].lstrip("\n")
