"""Tuning the fine-tune recipe on validation data, with the same trials for both inits.

    dvc exp run --queue -S profile=cpu -S fraction=0.1 -S 'finetune.lr=0.05,0.1,0.2'   # one experiment per value
    dvc queue start
    python -m tools.tune --exp <names...>       # or: every experiment of the current commit

Each experiment of the sweep fine-tunes both inits on every seed, so every setting is one trial for scratch and
one for pretrained: the inits get the same number of trials by construction. The experiments must differ only
in `finetune.*` (the tuned recipe) and the hardware knobs. For each init the chosen setting is the one with the
highest mean validation macro-F1 of the validation-selected epoch over the seeds; test metrics are never read.
Writes metrics/tuning.json and its table (`render`, a pure function of it: a test checks the two agree) into
docs/results.md between the tuning markers, and prints the table; the chosen values go into the profile by hand
(conf/profile/*.yaml), and the regenerated study reports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from selfsup.files import save_json
from selfsup.params import UserError
from selfsup.paths import INITS
from selfsup.stage import run_stage
from tools.report import RESULTS_DOC, check_same_study, experiment_refs, flatten, read_experiment, splice

TUNING_JSON = Path("metrics/tuning.json")
BEGIN, END = "<!-- tuning:begin (written by python -m tools.tune) -->", "<!-- tuning:end -->"
FREE = ("finetune", "device", "nproc", "compile", "stream", "precision")  # may differ between the trials
SELECT_ON = "best_val_f1_macro"  # validation macro-F1 of the validation-selected epoch


def build(experiments: list[dict]) -> dict:
    """The trials (one per experiment), each init's mean validation score per trial, and each init's choice."""
    if len(experiments) < 2:
        raise UserError("tuning compares settings: give two or more experiments (--exp a b ...)")
    check_same_study(experiments, FREE, "a sweep varies the fine-tune recipe only")
    settings = [flatten(e["params"]["finetune"]) for e in experiments]
    varied = sorted(k for k in settings[0] if len({str(s.get(k)) for s in settings}) > 1)
    trials = []
    for exp, setting in zip(experiments, settings):
        runs = exp["compare"]["runs"]
        trials.append({
            "experiment": exp["name"], "setting": {k: setting[k] for k in varied},
            "validation": {init: float(np.mean([r[SELECT_ON] for r in runs[init]])) for init in INITS},
            "validation_sd": {init: float(np.std([r[SELECT_ON] for r in runs[init]], ddof=1))
                              if len(runs[init]) > 1 else None for init in INITS},
            "seeds": len(runs["scratch"]),
        })
    trials.sort(key=lambda t: [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
                               for v in (t["setting"][k] for k in varied)])  # the table in setting order
    chosen = {init: max(trials, key=lambda t, i=init: t["validation"][i])["experiment"] for init in INITS}
    return {"varied": varied, "trials": trials, "trials_per_init": {init: len(trials) for init in INITS},
            "chosen": chosen, "same_choice": len(set(chosen.values())) == 1, "selected_on": SELECT_ON,
            "fraction": experiments[0]["params"]["fraction"]}


def render(tuning: dict) -> str:
    """The table: one row per trial, each init's mean validation macro-F1 (± its standard deviation over the
    seeds), the chosen ones in bold."""
    def cell(t: dict, init: str) -> str:
        mean = f"**{t['validation'][init]:.4f}**" if tuning["chosen"][init] == t["experiment"] \
            else f"{t['validation'][init]:.4f}"
        sd = t["validation_sd"][init]  # None with one seed
        return mean if sd is None else f"{mean} ± {sd:.4f}"

    head = " | ".join(tuning["varied"])
    lines = [f"| experiment | {head} | scratch val macro-F1 | pretrained val macro-F1 |",
             "|---|" + "---|" * len(tuning["varied"]) + "---|---|"]
    for t in tuning["trials"]:
        cells = [cell(t, i) for i in INITS]
        values = " | ".join(str(t["setting"][k]) for k in tuning["varied"])
        lines.append(f"| {t['experiment']} | {values} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append(f"{tuning['trials_per_init']['scratch']} trials per init at {tuning['fraction']:.0%} of the labels, "
                 f"{tuning['trials'][0]['seeds']} seeds each, chosen on validation only ({tuning['selected_on']}, "
                 f"mean ± standard deviation over seeds); "
                 + ("the same setting wins for both inits." if tuning["same_choice"]
                    else "the inits prefer different settings."))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", nargs="+", help="the sweep's experiment names (default: those of --baseline)")
    parser.add_argument("--baseline", help="commit whose experiments form the sweep (default HEAD)")
    parser.add_argument("--results-doc", type=Path, default=RESULTS_DOC)
    args = parser.parse_args(argv)
    tuning = build([read_experiment(r) for r in experiment_refs(args.baseline, args.exp)])
    table = render(tuning)
    doc = splice(args.results_doc.read_text(), table, BEGIN, END, args.results_doc)
    args.results_doc.write_text(doc)
    save_json(tuning, TUNING_JSON)
    print(table, end="")


if __name__ == "__main__":
    run_stage(main, outputs=[TUNING_JSON], check=False)
