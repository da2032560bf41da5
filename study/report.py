"""The study's report: its arms' records (metrics/arms/<arm>.json, committed as each arm finished: one DVC
experiment per arm of protocol.yaml, a pretext at a label fraction) held to the protocol and pooled into one set
of results. It reads Git's files alone: no DVC cache, no experiment refs. This module is the command; the parts are
study.protocol (the protocol and its checks), study.experiments (reading experiments, the checks
that they belong together), study.results (the analysis) and study.report_text (the documents' text).

    python -m study report                 # the arms recorded in metrics/arms/ (python -m study run writes them)
    python -m study report --partial       # the arms recorded so far
    python -m study report --rejudge       # metrics/study.json's endpoints judged again, the documents rewritten

Not a DVC stage: it reads across experiments. It prints which protocol it read, and refuses in one line an
experiment that differs from it (profile, seeds, budget, an arm it does not declare, a commit with another
protocol), an arm without an experiment (unless --partial), experiments that differ in any param but the arm's
(pretext, fraction, seeds), and runs with different numerics (--mixed-numerics pools them anyway). Writes
metrics/study.json (every number shown, each arm's machine and wall clock from its record),
plots/label_efficiency.png, plots/fraction_curves.png, the full
Markdown results (`render`) into
docs/results.md and the short answer (`render_answer`: the primary endpoint table, the verdict, the figure)
into README.md, each between its results markers. Both renders are pure functions of study.json, so a test
checks that the documents show exactly what it holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfsup.analysis import figures
from study.protocol import PROTOCOL, Protocol, describe, load_protocol
from selfsup.core.files import save_json
from selfsup.core.params import UserError
from selfsup.core.stage import run_stage
from study.records import RECORDS, as_experiment, read_records
from study.markdown import first_paragraph, splice
from study.report_text import FIGURES, RESULTS_DOC, render, render_answer
from study.results import build_study, judge

STUDY_JSON = Path("metrics/study.json")
README = Path("README.md")
BEGIN, END = "<!-- results:begin (written by python -m study report) -->", "<!-- results:end -->"


def draw_figures(study: dict, protocol: Protocol, paths: dict[str, Path] = FIGURES) -> None:
    """The label-efficiency figure (each init's metric and each pretext's gain against the fraction) and the
    primary pretext's validation curves per fraction."""
    series: dict[str, list] = {"scratch": []}
    gains: dict[str, list] = {}
    for arm in study["arms"]:
        if arm.get("budget_factor", 1) != 1:
            continue  # a described arm at another budget: not a point of the curve
        t = arm["tests"][protocol.metric]
        if arm["pretext"] == protocol.primary.pretext:
            series["scratch"].append((arm["fraction"], t["scratch"]))
        series.setdefault(arm["pretext"], []).append((arm["fraction"], t["pretrained"]))
        gains.setdefault(arm["pretext"], []).append((arm["fraction"], t["difference"]))
    figures.label_efficiency(series, gains, protocol.margin, paths["label_efficiency"])
    primary = {a["fraction"]: a["curves"] for a in study["arms"]
               if a["pretext"] == protocol.primary.pretext and a.get("budget_factor", 1) == 1}
    figures.fraction_curves(primary, paths["curves"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--records", type=Path, default=RECORDS, help="the arms' records (default %(default)s)")
    parser.add_argument("--mixed-numerics", action="store_true",
                        help="pool runs whose precision, device, process count or library versions differ")
    parser.add_argument("--partial", action="store_true", help="report the arms that have run, the others 'not run'")
    parser.add_argument("--rejudge", action="store_true",
                        help="read no experiment: judge metrics/study.json's endpoints again by the protocol's rules "
                             "(after the statistics code changed, no run) and rewrite the figures and documents")
    parser.add_argument("--protocol", type=Path, default=PROTOCOL)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results-doc", type=Path, default=RESULTS_DOC)
    args = parser.parse_args(argv)
    protocol = load_protocol(args.protocol)
    print(describe(protocol))
    if args.rejudge:
        study = json.loads(STUDY_JSON.read_text())
        if study["protocol"]["sha1"] != protocol.digest:
            raise UserError(f"{STUDY_JSON} was judged under protocol sha1 {study['protocol']['sha1'][:12]}, not "
                            f"{args.protocol}'s: run the report on the experiments instead")
        judge(study["endpoints"], protocol.alpha)
    else:
        records = [as_experiment(r) for r in read_records(args.records).values()]
        study = build_study(records, protocol, args.mixed_numerics, args.partial)
    save_json(study, STUDY_JSON)
    draw_figures(study, protocol)
    results_doc = splice(args.results_doc.read_text(), render(study), BEGIN, END, args.results_doc)
    readme = splice(args.readme.read_text(), render_answer(study), BEGIN, END, args.readme)
    args.results_doc.write_text(results_doc)
    args.readme.write_text(readme)
    print(f"report: {len(study['arms'])} arms ({', '.join(study['experiments'])}) -> {STUDY_JSON}, "
          f"{', '.join(map(str, FIGURES.values()))}, {args.results_doc}, {args.readme}")


def cli() -> None:
    """`python -m study <command>` (study/__main__.py): not a stage, so its one-line errors without the params
    check."""
    run_stage(main)
