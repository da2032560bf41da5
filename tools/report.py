"""The label-efficiency report: the study's experiments (one per label fraction) in one set of results. This
module is the command; the parts are tools.experiments (reading experiments, the checks that they belong
together), tools.study (the analysis) and tools.report_text (the documents' text).

    python -m tools.report                 # the experiments of the current commit (dvc exp run --queue ...)
    python -m tools.report --baseline REV  # ... of another baseline commit
    python -m tools.report --exp a b c     # these experiments, by name

Not a DVC stage: it reads across experiments. All experiments must share every param but `fraction`, and
their runs one numerics record (--mixed-numerics pools them anyway). Writes metrics/study.json (every number
shown), plots/label_efficiency.png, plots/fraction_curves.png, the full Markdown results (`render`) into
docs/results.md and the short answer (`render_answer`: the primary endpoint table, the verdict, the figure)
into README.md, each between its results markers. Both renders are pure functions of study.json, so a test
checks that the documents show exactly what it holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.analysis import figures
from selfsup.core.files import save_json
from selfsup.core.stage import run_stage
from tools.experiments import experiment_refs, read_experiment
from tools.markdown import splice
from tools.report_text import FIGURES, RESULTS_DOC, render, render_answer
from tools.study import INITS, build_study

STUDY_JSON = Path("metrics/study.json")
README = Path("README.md")
BEGIN, END = "<!-- results:begin (written by python -m tools.report) -->", "<!-- results:end -->"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="commit whose experiments to report (default HEAD)")
    parser.add_argument("--exp", nargs="+", help="experiment names instead")
    parser.add_argument("--mixed-numerics", action="store_true",
                        help="pool runs whose precision, device, process count or library versions differ")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results-doc", type=Path, default=RESULTS_DOC)
    args = parser.parse_args(argv)
    experiments = [read_experiment(r) for r in experiment_refs(args.baseline, args.exp)]
    study = build_study(experiments, args.mixed_numerics)
    save_json(study, STUDY_JSON)
    stats = {i: [fr["tests"]["best_f1_macro"][i] for fr in study["fractions"]] for i in INITS}
    fractions = [fr["fraction"] for fr in study["fractions"]]
    figures.label_efficiency(fractions, stats, FIGURES["label_efficiency"])
    figures.fraction_curves({fr["fraction"]: fr["curves"] for fr in study["fractions"]}, FIGURES["curves"])
    results_doc = splice(args.results_doc.read_text(), render(study), BEGIN, END, args.results_doc)
    readme = splice(args.readme.read_text(), render_answer(study), BEGIN, END, args.readme)
    args.results_doc.write_text(results_doc)
    args.readme.write_text(readme)
    print(f"report: {len(fractions)} fractions ({', '.join(study['experiments'])}) -> {STUDY_JSON}, "
          f"{', '.join(map(str, FIGURES.values()))}, {args.results_doc}, {args.readme}")


if __name__ == "__main__":
    run_stage(main, check=False)  # not a stage: the one-line errors, without the params check
