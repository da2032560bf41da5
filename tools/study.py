"""The study's analysis: the experiments of one study (one per label fraction) pooled into the numbers every
document shows (metrics/study.json). The primary endpoint, declared before any run, is the test macro-F1 gain of
pretraining at 10 % of the labels (`PRIMARY_FRACTION`), tested alone; every other comparison (the gains at the
other fractions, the other metrics) is secondary, its p-values Holm-corrected over that whole family. Of several
runs at one fraction the newest is used."""

from __future__ import annotations

from selfsup.analysis.endpoints import LABELS, PRIMARY, PRIMARY_FRACTION
from selfsup.analysis.stats import holm
from selfsup.config import hardware_knobs
from selfsup.core import paths
from selfsup.loop.budget import finetune_epochs
from tools.experiments import check_numerics, check_same_study, dataset_name

FREE = {"fraction", *hardware_knobs()}  # what may differ between a study's experiments (numerics: check_numerics)
INITS = paths.INITS
METRICS = list(LABELS.items())  # (key, label), the primary first


def build_study(experiments: list[dict], mixed_numerics: bool = False) -> dict:
    """The numbers the results section shows, newest experiment per fraction."""
    check_same_study(experiments, FREE, "a report compares fractions of one study; choose them with --exp")
    numerics = None if mixed_numerics else check_numerics(experiments)
    newest: dict[float, dict] = {}
    for exp in sorted(experiments, key=lambda e: e["finished"]):
        newest[float(exp["params"]["fraction"])] = exp
    fractions = sorted(newest, reverse=True)
    tests = {f: newest[f]["compare"]["tests"] for f in fractions}
    secondary = [(f, key) for f in fractions for key, _ in METRICS if (f, key) != (PRIMARY_FRACTION, PRIMARY)]
    adjusted = dict(zip(secondary, holm([tests[f][key]["difference"]["p"] for f, key in secondary])))
    params = experiments[0]["params"]
    data = params["data"]
    # one pretraining per seed serves every fraction (the run-cache restores it): counted once
    pretrain_wall = max(e["compare"]["pretrain_wall_seconds"] for e in newest.values())
    wall = pretrain_wall + sum(e["compare"]["stage_wall_seconds"] - e["compare"]["pretrain_wall_seconds"]
                               for e in newest.values())
    per_fraction = []
    for f in fractions:
        c = newest[f]["compare"]
        per_fraction.append({
            "fraction": f, "experiment": newest[f]["name"], "labelled_size": c["labelled_size"],
            "finetune_epochs": finetune_epochs(newest[f]["params"]),
            "primary": f == PRIMARY_FRACTION,
            "tests": {key: {**t, "p_holm": None if (f, key) not in adjusted else adjusted[(f, key)]}
                      for key, t in tests[f].items()},
            "convergence": c["convergence"], "runs": c["runs"],
            "threshold_val_f1": c["threshold_val_f1"], "threshold_val_loss": c["threshold_val_loss"],
            "per_class_f1": c["per_class_f1"], "curves": c["curves"],
            "best_epochs": {i: [r["best_epoch"] for r in c["runs"][i]] for i in INITS},
            "stage_wall_seconds": c["stage_wall_seconds"],
        })
    first = newest[fractions[0]]
    return {
        "fractions": per_fraction,
        "classes": first["compare"]["classes"],
        "seeds": first["compare"]["seeds"],
        "confidence": params["compare"]["confidence"],
        "profile": params.get("profile_name", "?"),
        "model": f"{params['model']['arch']}, {params['model']['stem']} stem",
        "primary_fraction": PRIMARY_FRACTION,
        "secondary_tests": len(secondary),
        "pretext": first["compare"]["pretext"] | {"task": params["pretext"]["task"],
                                                   "epochs": params["pretext"]["epochs"]},
        "dataset": {"source": data["source"],
                    "origin": dataset_name(data),
                    "md5": data.get("md5") if data["source"] == "cifar10" else None,
                    "test_size": first["compare"]["test_size"]},
        "device": first["compare"]["device"],
        "numerics": numerics if numerics is not None else "mixed (--mixed-numerics)",
        "commit": first["baseline"][:10],
        "experiments": [newest[f]["name"] for f in fractions],
        "wall_seconds": wall,
        "pretrain_wall_seconds": pretrain_wall,
    }
