"""The pretext comparison: one experiment per pretext task (or backbone), side by side in one table (docs/pretexts.md).

    python -m study pretexts --exp task-context task-rotation task-jigsaw ...

Not a DVC stage: like `study.report` it reads DVC experiments (Git refs). The experiments must share every
param except `pretext.*` and `model.*` (and the hardware knobs): the same data, split, fraction, fine-tune
recipe and seeds. Scratch fine-tunes do not depend on the pretext, so DVC's run-cache restores them and
every row compares against the same scratch runs. Writes metrics/methods.json and the Markdown table,
spliced into docs/pretexts.md between the methods markers; `render(methods.json)` is pure, so a test checks that
the document shows exactly what the JSON holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.core.files import save_json
from selfsup.loop.budget import finetune_epochs
from selfsup.core.stage import run_stage
from selfsup.config import hardware_knobs
from study.experiments import check_same_study, dataset_name, experiment_refs, read_experiment
from study.markdown import ci, first_paragraph, p_value, readme_section, splice

METHODS_JSON = Path("metrics/methods.json")
PRETEXTS_DOC = Path("docs/pretexts.md")
BEGIN, END = "<!-- methods:begin (written by python -m study pretexts) -->", "<!-- methods:end -->"
FREE = {"pretext", "model", *hardware_knobs()}  # may differ between the rows


def build(experiments: list[dict]) -> dict:
    check_same_study(experiments, FREE, "a comparison of methods keeps data, split and fine-tuning fixed")
    rows = []
    for exp in experiments:
        params, compare = exp["params"], exp["compare"]
        pre = compare["pretext"]
        rows.append({
            "experiment": exp["name"], "task": params["pretext"]["task"],
            "model": f"{params['model']['arch']}, {params['model']['stem']} stem",
            "metric": pre["metric"], "chance": pre["chance"], "final_train": pre["final_train"],
            "final_heldout": pre["final_heldout"], "controls": pre.get("controls", {}),
            "pretrain_seconds": sum(pre["train_seconds"]) / len(pre["train_seconds"]),  # per seed's pretraining
            "probe_during": [pre["probe_random_extractor"], pre["probe_pretrained_extractor"]],
            "finetune": compare["tests"]["test_f1_macro"], "probe": compare["tests"]["probe_f1_macro"],
        })
    params = experiments[0]["params"]
    data = params["data"]
    return {
        "rows": rows,
        "seeds": experiments[0]["compare"]["seeds"],
        "fraction": params["fraction"],
        "labelled_size": experiments[0]["compare"]["labelled_size"],
        "profile": params.get("profile_name", "?"),
        "pretext_epochs": params["pretext"]["epochs"], "finetune_epochs": finetune_epochs(params),
        "dataset": dataset_name(data),
        "device": experiments[0]["compare"]["device"],
        "commit": experiments[0]["baseline"][:10],
        "selection": "after the last epoch of the fixed budget",
    }


def render(methods: dict) -> str:
    lines = [
        f"**What was run.** Dataset {methods['dataset']}, {methods['fraction']:.0%} of the labels "
        f"({methods['labelled_size']:,} labelled images), profile `{methods['profile']}` ({methods['pretext_epochs']} "
        f"pretext, {methods['finetune_epochs']} fine-tune epochs), seeds {methods['seeds']}, device "
        f"{methods['device']}, code at commit `{methods['commit']}`. Fine-tune: test macro-F1 "
        f"{methods.get('selection', 'at the validation-selected epoch')}, mean [95% t interval] over seeds; "
        f"difference: pretrained - scratch, paired "
        f"over seeds, p uncorrected (an exploratory comparison). Every row shares the same scratch runs. "
        f"Pretraining seconds are training time only, measured while other work shared the CPU: see the cost "
        f"table for speeds.",
        "",
        "| pretext | backbone | pretext metric: train / held-out (chance) | held-out controls | pretraining s (per seed) | "
        "probe during pretraining: random -> final | linear probe test F1: random / pretrained (p) | "
        "fine-tune test F1: scratch / pretrained | difference (p) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in methods["rows"]:
        chance = f" ({r['chance']:.3f})" if r["chance"] else ""
        speed = f"{r['pretrain_seconds']:.0f}"
        controls = ", ".join(f"{k} {v:.3f}" for k, v in r.get("controls", {}).items()) or "-"
        probe = r["probe"]
        lines.append(
            f"| {r['task']} | {r['model']} | {r['metric']} {r['final_train']:.3f} / {r['final_heldout']:.3f}{chance} | "
            f"{controls} | {speed} | {r['probe_during'][0]:.3f} -> {r['probe_during'][1]:.3f} | "
            f"{probe['scratch']['mean']:.4f} / {probe['pretrained']['mean']:.4f} ({p_value(probe['difference']['p'])}) | "
            f"{ci(r['finetune']['scratch'])} / {ci(r['finetune']['pretrained'])} | "
            f"{ci(r['finetune']['difference'])} ({p_value(r['finetune']['difference']['p'])}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--exp", nargs="+", required=True, help="experiment names, one row each, in this order")
    parser.add_argument("--doc", type=Path, default=PRETEXTS_DOC)
    args = parser.parse_args(argv)
    refs = experiment_refs(None, args.exp)
    by_name = {r.rsplit("/", 1)[1]: r for r in refs}
    methods = build([read_experiment(by_name[name]) for name in args.exp])
    save_json(methods, METHODS_JSON)
    args.doc.write_text(splice(args.doc.read_text(), render(methods), BEGIN, END))
    print(f"methods: {len(methods['rows'])} experiments -> {METHODS_JSON}, {args.doc}")


def cli() -> None:
    """`python -m study <command>` (study/__main__.py): not a stage, so its one-line errors without the params
    check."""
    run_stage(main)


__all__ = ["BEGIN", "END", "build", "main", "readme_section", "render"]
