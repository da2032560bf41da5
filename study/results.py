"""The study's analysis: its experiments (one per arm: a pretext at a label fraction) held to the protocol
(protocol.yaml, study/protocol.py) and pooled into the numbers every document shows
(metrics/study.json). The endpoints are the protocol's: the primary tested alone, the secondaries Holm-corrected
as their own family, each with its 95 % interval, the equivalence test against the declared margin and the power
its seeds give. Every other number (other metrics, the four questions, the probes) is described, not tested. Of
several runs of one arm the newest is used."""

from __future__ import annotations

import numpy as np

from selfsup.analysis.endpoints import LABELS
from study.protocol import Protocol, arm_estimates, check_experiment, ordered, protocol_file_at
from selfsup.analysis.stats import holm, mean_ci, tost
from selfsup.config import hardware_knobs
from selfsup.core import paths
from selfsup.core.params import UserError
from selfsup.loop.budget import finetune_epochs
from selfsup.pretexts import TASKS
from study.experiments import check_numerics, check_same_code, check_same_study, dataset_name

# what may differ between a study's experiments: the arm (fraction, seeds, pretext) and the hardware knobs
FREE = {"fraction", "seeds", "pretext.task", *(f"pretext.{t}" for t in TASKS), *hardware_knobs(),
        "finetune.epochs_by_fraction"}  # a described arm's other budget (protocol.yaml's budget_factor)
INITS = paths.INITS
REPLICATE = "-fp32"  # the primary arm's experiment run again in fp32 is named <arm><REPLICATE> (study.run)
METRICS = list(LABELS.items())  # (key, label), the compared metric first


def study_numerics(experiments: list[dict]) -> dict:
    """One numerics record for the fine-tunes and probes of every arm, and one per pretext for the pretrainings:
    each pretext pretrains its own network, so `compile: auto` may rightly decide differently for each. Where the
    runs came from (the device) may differ between arms: a study's arms may run on several machines, each arm's
    record names its own, and the report shows them; precision, processes, compile and libraries may not."""
    def only(exp: dict, kinds: tuple[str, ...]) -> dict:
        recorded = exp["compare"].get("numerics", {"finetune": [None]})  # none: made before runs recorded it
        kept = {k: [None if r is None else {x: y for x, y in r.items() if x != "device"} for r in records]
                for k, records in recorded.items() if k in kinds}
        return {"name": exp["name"], "compare": {"numerics": kept}}
    pretexts = dict.fromkeys(e["params"]["pretext"]["task"] for e in experiments)
    pretrain = {p: check_numerics([only(e, ("pretrain",)) for e in experiments
                                   if e["params"]["pretext"]["task"] == p]).get("pretrain") for p in pretexts}
    return check_numerics([only(e, ("finetune", "linear_probe")) for e in experiments]) | {"pretrain": pretrain}


def seed_differences(arm: dict, metric: str) -> list[float]:
    """Per seed, pretrained - scratch (compare.json lists each init's runs in seed order)."""
    return [p[metric] - s[metric] for p, s in zip(arm["runs"]["pretrained"], arm["runs"]["scratch"])]


def arm_entry(exp: dict, pretext: str, fraction: float) -> dict:
    c = exp["compare"]
    return {
        "pretext": pretext, "fraction": fraction, "experiment": exp["name"], "seeds": c["seeds"],
        "labelled_size": c["labelled_size"], "finetune_epochs": finetune_epochs(exp["params"]),
        "tests": c["tests"], "convergence": c["convergence"], "runs": c["runs"],
        "threshold_val_f1": c["threshold_val_f1"], "threshold_val_loss": c["threshold_val_loss"],
        "per_class_f1": c["per_class_f1"], "curves": c["curves"], "pretext_summary": c["pretext"],
        "stage_wall_seconds": c["stage_wall_seconds"], "pretrain_wall_seconds": c["pretrain_wall_seconds"],
        "machine": exp.get("machine"), "wall_seconds": exp.get("wall_seconds"),
        "scratch_wall_seconds": sum(r["wall_seconds"] for r in c["runs"]["scratch"]),
    }


def endpoint_entry(protocol: Protocol, endpoint, arm: dict | None) -> dict:
    out = {"pretext": endpoint.pretext, "fraction": endpoint.fraction, "primary": endpoint.primary,
           "power": protocol.power(endpoint), "run": arm is not None}
    if arm is None:
        return out
    t = arm["tests"][protocol.metric]
    diffs = seed_differences(arm, protocol.metric)
    out.update({"experiment": arm["experiment"], "labelled_size": arm["labelled_size"], "n": len(diffs),
                "scratch": t["scratch"], "pretrained": t["pretrained"], "difference": t["difference"],
                "differences": diffs, "equivalence": tost(diffs, protocol.margin, protocol.alpha),
                "half_width": None if t["difference"]["ci_low"] is None
                else (t["difference"]["ci_high"] - t["difference"]["ci_low"]) / 2,
                # what the seeds could show at the spread they came out with, beside the power planned at the
                # assumed one: described, not a test; none under two seeds or with no spread (no t test either)
                "power_observed": protocol.power_at(len(diffs), t["difference"]["std"])
                if t["difference"]["std"] else None})
    return out


def judge(endpoints: list[dict], alpha: float) -> list[dict]:
    """The verdicts as the protocol declares them: the primary tested alone; the secondaries one family, whose
    size is every declared secondary (one that could not be tested counts with p = 1), Holm-adjusted both for a
    gain (`p_holm`) and for equivalence within the margin (`equivalence.p_holm`, and `equivalent` from it)."""
    secondary = [e for e in endpoints if not e["primary"]]
    gain_p = holm([e["difference"]["p"] if e["run"] else None for e in secondary])
    equivalence_p = holm([e["equivalence"]["p"] if e["run"] else None for e in secondary])
    for e, p, q in zip(secondary, gain_p, equivalence_p):
        e["p_holm"] = p
        if e["run"]:
            e["equivalence"] = e["equivalence"] | {"p_holm": q, "equivalent": None if e["equivalence"]["p"] is None
                                                   else q < alpha}
    return endpoints


def fp32_replicate(protocol: Protocol, primary: dict, precision: str | None, replicates: list[dict]) -> dict:
    """The primary endpoint's gain again in fp32 beside the study's own: they agree when the fp32 gain lies
    inside the study's interval. A study that ran in fp32 is its own replicate."""
    if precision == "fp32":
        return {"status": "the study ran in fp32"}
    if not replicates or not primary["run"]:
        return {"status": "not run"}
    exp = max(replicates, key=lambda e: e["finished"])
    check_experiment(protocol, exp, finetune_epochs(exp["params"]))
    ran = {r["precision"] for records in exp["compare"]["numerics"].values() for r in records if r}
    if ran != {"fp32"}:
        raise UserError(f"experiment {exp['name']} should be the fp32 replicate but ran in {', '.join(sorted(ran))}")
    d, study = exp["compare"]["tests"][protocol.metric]["difference"], primary["difference"]
    agree = study["ci_low"] is not None and study["ci_low"] <= d["mean"] <= study["ci_high"]
    return {"status": "run", "experiment": exp["name"], "precision": precision, "difference": d, "agree": agree}


def ssl_rows(arms: list[dict], metric: str) -> list[dict]:
    """Per pretext, the three ways the SSL libraries report a pretraining: linear probe and kNN accuracy of the
    frozen features (pretrained and random extractor, test, mean over the seeds of its reference arm, whose labels
    the probe and kNN train on: at the largest share every pretext was fine-tuned at, so that the pretexts compare
    on the same labels, else at its own arm with most seeds and, of those, most labels), and the fine-tuned gain at
    each fraction it was fine-tuned at."""
    pretexts = list(dict.fromkeys(a["pretext"] for a in arms))
    shared = max(set.intersection(*({a["fraction"] for a in arms if a["pretext"] == p} for p in pretexts)),
                 default=None) if len(pretexts) > 1 else None
    rows = []
    for pretext in pretexts:
        mine = [a for a in arms if a["pretext"] == pretext]
        ref = max(mine, key=lambda a: (a["fraction"] == shared, a.get("budget_factor", 1) == 1, len(a["seeds"]),
                                       a["fraction"]))
        t = ref["tests"]
        rows.append({
            "pretext": pretext, "seeds": ref["seeds"], "summary": ref["pretext_summary"],
            "fraction": ref["fraction"], "labelled_size": ref["labelled_size"],
            "heldout": ref["pretext_summary"]["final_heldout"],
            "metric": ref["pretext_summary"]["metric"], "chance": ref["pretext_summary"].get("chance"),
            "pretrain_seconds": float(np.mean(ref["pretext_summary"]["train_seconds"])),
            "probe": {i: t["probe_accuracy"][i]["mean"] for i in INITS},
            "knn": {i: t["knn_accuracy"][i]["mean"] for i in INITS} if "knn_accuracy" in t else None,
            "finetune_gain": {str(a["fraction"]): a["tests"][metric]["difference"] for a in mine},
        })
    return rows


def probe_rows(arms: list[dict], probed: list[dict]) -> list[dict]:
    """The frozen extractors as the SSL libraries report them, at every label share a pretext was probed at: test
    accuracy of the linear probe and of the kNN classifier (random extractor and pretrained), mean over seeds with
    its 95 % interval; from the fine-tuned arms' probe stages and the probe-only arms' (e.g. 45,000 labels)."""
    rows = []
    for a in arms:
        if a.get("budget_factor", 1) != 1 or "probe_accuracy" not in a["runs"]["scratch"][0]:
            continue
        rows.append({"pretext": a["pretext"], "fraction": a["fraction"], "labelled_size": a["labelled_size"],
                     "seeds": a["seeds"], **{f"{kind}_{i}": mean_ci([r[f"{kind}_accuracy"] for r in a["runs"][i]])
                                             for kind in ("probe", "knn") for i in INITS}})
    for exp in probed:
        seeds = sorted(exp["probes"], key=int)
        runs = [exp["probes"][s] for s in seeds]
        rows.append({"pretext": exp["arm"].pretext, "fraction": exp["arm"].fraction,
                     "labelled_size": runs[0]["labelled_size"], "seeds": [int(s) for s in seeds],
                     **{f"probe_{i}": mean_ci([r[i]["test"]["accuracy"] for r in runs]) for i in INITS},
                     **{f"knn_{i}": mean_ci([r[i]["knn"]["test"]["accuracy"] for r in runs]) for i in INITS}})
    return sorted(rows, key=lambda r: (r["pretext"], r["fraction"]))


def crossover(arms: list[dict], pretext: str, metric: str, margin: float) -> dict:
    """The protocol's declared descriptive analysis: the smallest tested label share from which on the gain's 95 %
    interval lies inside ±margin at every larger share too, and the largest share below it (the crossover lies
    between them); None where no tested share has its interval inside. Read off the curve, not tested."""
    points = sorted((a["fraction"], a["tests"][metric]["difference"]) for a in arms
                    if a["pretext"] == pretext and a.get("budget_factor", 1) == 1)
    inside = [d["ci_low"] is not None and -margin < d["ci_low"] and d["ci_high"] < margin for _, d in points]
    first = next((k for k in range(len(points)) if all(inside[k:])), None)
    return {"fractions": [f for f, _ in points],
            "first_inside": None if first is None else points[first][0],
            "last_outside": None if first is None or first == 0 else points[first - 1][0]}


def build_study(experiments: list[dict], protocol: Protocol, mixed_numerics: bool = False,
                partial: bool = False) -> dict:
    """The numbers the results show, the newest experiment per arm, checked against the protocol."""
    protocol.check_final()
    replicates = [e for e in experiments if e["name"].endswith(REPLICATE)]
    experiments = [e for e in experiments if not e["name"].endswith(REPLICATE)]
    protocol_bytes = protocol.path.read_bytes()
    newest: dict[str, dict] = {}
    probed: dict[str, dict] = {}  # the probe-only arms
    for exp in sorted(experiments, key=lambda e: e["finished"]):
        if protocol_file_at(exp["baseline"], protocol.path) != protocol_bytes:
            raise UserError(f"experiment {exp['name']} ran at commit {exp['baseline'][:7]}, whose {protocol.path} "
                            f"differs from (or lacks) the one read here: rerun it at a commit with this protocol")
        arm = check_experiment(protocol, exp, finetune_epochs(exp["params"]))
        (probed if arm.probe_only else newest)[arm.name] = exp | {"arm": arm}
    experiments = list(newest.values())
    if not experiments:
        raise UserError("no fine-tuned arm has a record yet: `python -m study run` runs them")
    check_same_code([*experiments, *probed.values()])
    check_same_study([*experiments, *probed.values()], FREE,
                     "a study's arms share every param but pretext, fraction and seeds (and a described arm's budget)")
    numerics = None if mixed_numerics else study_numerics(experiments)
    missing = [a.name for a in protocol.arms if a.name not in newest and a.name not in probed]
    if missing and not partial:
        raise UserError(f"the protocol's arms {', '.join(missing)} have no record: run them "
                        f"(python -m study run), or pass --partial to report what has run")
    confidence = experiments[0]["params"]["compare"]["confidence"]
    arms = [arm_entry(newest[a.name], a.pretext, a.fraction) | {"arm": a.name, "budget_factor": a.budget_factor}
            for a in protocol.arms if a.name in newest]
    by_arm = {(a["pretext"], a["fraction"]): a for a in arms if a["budget_factor"] == 1}
    endpoints = [endpoint_entry(protocol, e, by_arm.get((e.pretext, e.fraction))) for e in protocol.endpoints]
    judge(endpoints, protocol.alpha)
    precision = (numerics.get("finetune") or {}).get("precision") if isinstance(numerics, dict) else None

    # stage wall time of the work done, each piece once: a pretext's pretraining serves all its fractions, and
    # scratch fine-tunes at a fraction serve every pretext (the run-cache restores them)
    pretrain = {p: max(a["pretrain_wall_seconds"] for a in arms if a["pretext"] == p)
                for p in dict.fromkeys(a["pretext"] for a in arms)}
    scratch = {f: max(a["scratch_wall_seconds"] for a in arms if a["fraction"] == f)
               for f in dict.fromkeys(a["fraction"] for a in arms)}
    rest = sum(a["stage_wall_seconds"] - a["pretrain_wall_seconds"] - a["scratch_wall_seconds"] for a in arms)
    first = newest[arms[0]["arm"]]
    params, data = first["params"], first["params"]["data"]
    planned = arm_estimates(protocol, protocol.estimate)
    recorded = {**newest, **probed}
    cost = [{"arm": a.name, "planned_seconds": round(planned[a.name], 1),
             "wall_seconds": recorded[a.name].get("wall_seconds") if a.name in recorded else None,
             "machine": recorded[a.name].get("machine") if a.name in recorded else None} for a in ordered(protocol)]
    return {
        "protocol": protocol.summary(),
        "cost": cost,
        "endpoints": endpoints,
        "arms": arms,
        "ssl": ssl_rows(arms, protocol.metric),
        "probes": probe_rows(arms, list(probed.values())),
        "crossover": {p: crossover(arms, p, protocol.metric, protocol.margin)
                      for p in dict.fromkeys(a["pretext"] for a in arms)},
        "missing_arms": missing,
        "classes": first["compare"]["classes"],
        "confidence": confidence,
        "profile": params.get("profile_name", "?"),
        "model": f"{params['model']['arch']}, {params['model']['stem']} stem",
        "pretext_epochs": params["pretext"]["epochs"],
        "dataset": {"source": data["source"], "origin": dataset_name(data),
                    "md5": data.get("md5") if data["source"] == "cifar10" else None,
                    "test_size": first["compare"]["test_size"]},
        "device": first["compare"]["device"],
        "numerics": numerics if numerics is not None else "mixed (--mixed-numerics)",
        "fp32_replicate": fp32_replicate(protocol, endpoints[0], precision, replicates),
        "commit": first["baseline"][:10],
        "experiments": [a["experiment"] for a in arms],
        "wall_seconds": sum(pretrain.values()) + sum(scratch.values()) + rest,
        "pretrain_wall_seconds": pretrain,
    }
