"""Tuning the fine-tune recipe on validation data, with the same trials for both inits.

    dvc exp run --queue -S profile=cpu -S fraction=0.1 -S 'finetune.lr=0.05,0.1,0.2'   # one experiment per value
    dvc queue start
    python -m tools.tune --exp <names...>       # or: every experiment of the current commit

Each experiment of the sweep fine-tunes both inits on every seed, so every setting is one trial for scratch and
one for pretrained: the inits get the same number of trials by construction. The experiments must differ only
in `finetune.*` (the tuned recipe) and the hardware knobs. For each init the chosen setting is the one with the
highest mean validation macro-F1 of the validation-selected epoch over the seeds; test metrics are never read.
Writes metrics/tuning.json and prints the table; the chosen values go into the profile by hand
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
from tools.report import check_same_study, experiment_refs, flatten, read_experiment

TUNING_JSON = Path("metrics/tuning.json")
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
            "seeds": len(runs["scratch"]),
        })
    chosen = {init: max(trials, key=lambda t, i=init: t["validation"][i])["experiment"] for init in INITS}
    return {"varied": varied, "trials": trials, "trials_per_init": {init: len(trials) for init in INITS},
            "chosen": chosen, "same_choice": len(set(chosen.values())) == 1, "selected_on": SELECT_ON,
            "fraction": experiments[0]["params"]["fraction"]}


def render(tuning: dict) -> str:
    """The table: one row per trial, each init's mean validation macro-F1, the chosen ones in bold."""
    head = " | ".join(tuning["varied"])
    lines = [f"| experiment | {head} | scratch val macro-F1 | pretrained val macro-F1 |",
             "|---|" + "---|" * len(tuning["varied"]) + "---|---|"]
    for t in tuning["trials"]:
        cells = [f"**{t['validation'][i]:.4f}**" if tuning["chosen"][i] == t["experiment"] else f"{t['validation'][i]:.4f}"
                 for i in INITS]
        values = " | ".join(str(t["setting"][k]) for k in tuning["varied"])
        lines.append(f"| {t['experiment']} | {values} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append(f"{tuning['trials_per_init']['scratch']} trials per init at {tuning['fraction']:.0%} of the labels, "
                 f"chosen on validation only ({tuning['selected_on']}, mean over seeds); "
                 + ("the same setting wins for both inits." if tuning["same_choice"]
                    else "the inits prefer different settings."))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", nargs="+", help="the sweep's experiment names (default: those of --baseline)")
    parser.add_argument("--baseline", help="commit whose experiments form the sweep (default HEAD)")
    args = parser.parse_args(argv)
    tuning = build([read_experiment(r) for r in experiment_refs(args.baseline, args.exp)])
    save_json(tuning, TUNING_JSON)
    print(render(tuning), end="")


if __name__ == "__main__":
    run_stage(main, outputs=[TUNING_JSON], check=False)
