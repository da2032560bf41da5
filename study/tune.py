"""Tuning the fine-tune recipe on validation data, with the same trials for both inits.

    dvc exp run --queue -S profile=cpu -S fraction=0.1 -S 'finetune.lr=0.05,0.1,0.2'   # one experiment per value
    dvc queue start
    python -m study tune --exp <names...>       # or: every experiment of the current commit
    python -m study tune --exp <new...> --earlier metrics/tuning.json   # extend an earlier sweep

Each experiment of the sweep fine-tunes both inits on every seed, so every setting is one trial for scratch and
one for pretrained: the inits get the same number of trials by construction. The experiments must differ only
in `finetune.*` (the tuned recipe) and the hardware knobs. For each init the chosen setting is the one with the
highest mean validation macro-F1 of each run's last epoch over the seeds; test metrics are never read.
`--earlier` keeps the trials of an earlier tuning.json whose setting no new experiment repeats (marked
"earlier" in the table), so a sweep can be extended after its experiments are gone; they must be at the same
fraction and have as many seeds; a new sweep may vary another key of the recipe (the earlier trials' value of it is
read from their recipe). Writes metrics/tuning.json and its table (`render`, a pure
function of it: a test checks the two agree) into docs/results.md between the tuning markers, and prints the table;
the chosen values go into the profile by hand (conf/profile/*.yaml), and the regenerated study reports them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfsup.core.files import save_json
from selfsup.loop.budget import finetune_epochs
from selfsup.core.params import UserError
from selfsup.core.paths import INITS
from selfsup.core.stage import run_stage
from selfsup.config import hardware_knobs
from study.experiments import check_same_study, experiment_refs, flatten, read_experiment
from study.markdown import first_paragraph, splice
from study.report_text import RESULTS_DOC

TUNING_JSON = Path("metrics/tuning.json")
BEGIN, END = "<!-- tuning:begin (written by python -m study tune) -->", "<!-- tuning:end -->"
FREE = {"finetune", *hardware_knobs()}  # may differ between the trials
SELECT_ON = "final_val_f1_macro"  # validation macro-F1 of each run's last epoch (a fixed budget)


def build(experiments: list[dict], earlier: dict | None = None) -> dict:
    """The trials (one per experiment, plus those kept from `earlier`), each init's mean validation score per
    trial, and each init's choice."""
    if not experiments or len(experiments) + len(earlier["trials"] if earlier else []) < 2:
        raise UserError("tuning compares settings: give two or more experiments (--exp a b ...)")
    check_same_study(experiments, FREE, "a sweep varies the fine-tune recipe only")
    settings = [recipe(e["params"]) for e in experiments]
    varied = sorted(k for k in settings[0] if len({str(s.get(k)) for s in settings}) > 1)
    if earlier:  # the earlier sweep names its tuned keys; the new experiments may vary fewer, or add some
        added = [k for k in varied if k not in earlier["varied"]]
        varied = [*earlier["varied"], *added]
        earlier = with_keys(earlier, added)
    trials = []
    for exp, setting in zip(experiments, settings):
        runs = exp["compare"]["runs"]
        trials.append({
            "experiment": exp["name"], "setting": {k: setting[k] for k in varied},
            "validation": {init: float(np.mean([r[SELECT_ON] for r in runs[init]])) for init in INITS},
            "validation_sd": {init: float(np.std([r[SELECT_ON] for r in runs[init]], ddof=1))
                              if len(runs[init]) > 1 else None for init in INITS},
            "seeds": len(runs["scratch"]),
            "recipe": setting,  # the whole fine-tune recipe: what `--earlier` checks a later sweep against
        })
    if earlier:
        trials += kept_trials(earlier, trials, varied, experiments[0]["params"]["fraction"])
    trials.sort(key=lambda t: [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
                               for v in (t["setting"][k] for k in varied)])  # the table in setting order
    chosen = {init: max(trials, key=lambda t, i=init: t["validation"][i])["experiment"] for init in INITS}
    return {"varied": varied, "trials": trials, "trials_per_init": {init: len(trials) for init in INITS},
            "chosen": chosen, "same_choice": len(set(chosen.values())) == 1, "selected_on": SELECT_ON,
            "fraction": experiments[0]["params"]["fraction"]}


def recipe(params: dict) -> dict:
    """The fine-tune recipe a run trained with: its fraction's epochs in place of the per-fraction table (a
    sweep at 10 % does not vary with the 50 % budget)."""
    out = flatten(params["finetune"]) | {"epochs": finetune_epochs(params)}
    out.pop("epochs_by_fraction", None)
    return out


def with_keys(earlier: dict, added: list[str]) -> dict:
    """The earlier sweep with the keys a later sweep adds (a schedule setting after a learning-rate sweep) in
    every trial's setting, read from the trial's recipe; a trial written before trials carried their recipe
    shares the recorded trials' recipe outside the varied keys (as `kept_trials` takes it), so it gets theirs."""
    recorded = [t["recipe"] for t in earlier["trials"] if "recipe" in t]
    trials = []
    for t in earlier["trials"]:
        setting = dict(t["setting"])
        for key in added:
            values = {str(r.get(key)): r.get(key) for r in ([t["recipe"]] if "recipe" in t else recorded)}
            if len(values) != 1 or None in values.values():
                raise UserError(f"--earlier trial {t['experiment']} does not record one finetune.{key}: "
                                f"extend a sweep whose trials carry their recipe")
            setting[key] = next(iter(values.values()))
        trials.append({**t, "setting": setting})
    return {**earlier, "varied": [*earlier["varied"], *added], "trials": trials}


def kept_trials(earlier: dict, trials: list[dict], varied: list[str], fraction: float) -> list[dict]:
    """The earlier sweep's trials that no new one repeats, after checking that they belong to the same sweep."""
    if earlier.get("selected_on", "best_val_f1_macro") != SELECT_ON:
        raise UserError(f"--earlier chose on {earlier.get('selected_on', 'best_val_f1_macro')}, this sweep on "
                        f"{SELECT_ON} (runs now keep their last epoch): run the earlier settings again")
    if earlier["fraction"] != fraction:
        raise UserError(f"--earlier tuned at fraction {earlier['fraction']}, the new experiments ran at {fraction}: "
                        f"extend a sweep at the same fraction")
    seeds = {t["seeds"] for t in trials + earlier["trials"]}
    if len(seeds) > 1:
        raise UserError(f"--earlier trials and the new ones have different numbers of seeds ({sorted(seeds)})")
    fixed = {k: v for k, v in trials[0]["recipe"].items() if k not in varied}
    for t in earlier["trials"]:  # trials written before the recipe was recorded are taken as they are
        other = {k: v for k, v in t.get("recipe", fixed).items() if k not in varied}
        if other != fixed:
            differ = sorted(k for k in fixed.keys() | other.keys() if fixed.get(k) != other.get(k))
            raise UserError(f"--earlier trial {t['experiment']} differs from the new ones in finetune."
                            f"{', finetune.'.join(differ)}: a sweep varies only {', '.join(varied)}")
    new = [t["setting"] for t in trials]
    return [{**t, "earlier": True} for t in earlier["trials"] if t["setting"] not in new]


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
        name = t["experiment"] + (" (earlier)" if t.get("earlier") else "")
        lines.append(f"| {name} | {values} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append(f"{tuning['trials_per_init']['scratch']} trials per init at {tuning['fraction']:.0%} of the labels, "
                 f"{tuning['trials'][0]['seeds']} seeds each, chosen on validation only ({tuning['selected_on']}, "
                 f"mean ± standard deviation over seeds); "
                 + ("the same setting wins for both inits." if tuning["same_choice"]
                    else "the inits prefer different settings.")
                 + (" Trials marked earlier come from an earlier sweep of the same study (`--earlier`)."
                    if any(t.get("earlier") for t in tuning["trials"]) else ""))
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--exp", nargs="+", help="the sweep's experiment names (default: those of --baseline)")
    parser.add_argument("--baseline", help="commit whose experiments form the sweep (default HEAD)")
    parser.add_argument("--earlier", type=Path, help="an earlier metrics/tuning.json whose trials to keep")
    parser.add_argument("--results-doc", type=Path, default=RESULTS_DOC)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    tune(parse(argv))


def tune(args: argparse.Namespace) -> None:
    earlier = json.loads(args.earlier.read_text()) if args.earlier else None
    tuning = build([read_experiment(r) for r in experiment_refs(args.baseline, args.exp)], earlier)
    table = render(tuning)
    doc = splice(args.results_doc.read_text(), table, BEGIN, END, args.results_doc)
    args.results_doc.write_text(doc)
    save_json(tuning, TUNING_JSON)
    print(table, end="")


def cli() -> None:
    """`python -m study <command>` (study/__main__.py): not a stage, so its one-line errors without the params
    check. `-h` and a usage error exit in `parse`, before `run_stage`, which takes any exit for a failure and
    removes metrics/tuning.json."""
    args = parse()
    run_stage(lambda: tune(args), outputs=[TUNING_JSON])
