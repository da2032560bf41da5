"""The label-efficiency report: the study's experiments (one per label fraction) in one results section.

    python -m stages.report                 # the experiments of the current commit (dvc exp run --queue ...)
    python -m stages.report --baseline REV  # ... of another baseline commit
    python -m stages.report --exp a b c     # these experiments, by name

Not a DVC stage: it reads across experiments, which DVC keeps as Git refs (refs/exps/...), each commit
holding that run's params.yaml, dvc.lock and small committed outputs. All experiments must share every
param but `fraction` (and the hardware knobs); of several runs at one fraction the newest is used. Writes
metrics/study.json (every number the section shows), plots/label_efficiency.png, plots/fraction_curves.png,
and the Markdown section, spliced into README.md between the results markers. `render(study.json)` is a
pure function, so a test can check that the README shows exactly what study.json holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

from stages import figures
from stages.common import UserError, run_stage, save_json
from stages.stats import holm

STUDY_JSON = Path("metrics/study.json")
FIGURES = {"label_efficiency": Path("plots/label_efficiency.png"), "curves": Path("plots/fraction_curves.png")}
README = Path("README.md")
BEGIN, END = "<!-- results:begin (written by python -m stages.report) -->", "<!-- results:end -->"
IGNORED_PARAMS = {"fraction", "device", "nproc", "compile", "stream", "precision"}
INITS = ("scratch", "pretrained")
METRICS = [("best_f1_macro", "test macro-F1 (primary)"), ("best_accuracy", "test accuracy"),
           ("best_precision_macro", "test macro precision"), ("best_recall_macro", "test macro recall"),
           ("val_f1_auc", "val macro-F1, area under curve (mean over epochs)"),
           ("probe_f1_macro", "linear probe test macro-F1"), ("probe_accuracy", "linear probe test accuracy")]


def dataset_name(data: dict) -> str:
    """What the `data` params read, by file name: the folder or archive (`data.path`) of a folder source, the
    mirror at `data.url`, or else the source's official archive."""
    from stages.data import OFFICIAL  # imported here: the report needs no torch otherwise
    if data["source"] == "folder":
        return Path(data["path"]).name
    return Path(data["url"] or OFFICIAL[data["source"]][0]).name


def git(*args: str) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    return proc.stdout


def experiment_refs(baseline: str | None, names: list[str] | None) -> list[str]:
    refs = git("for-each-ref", "--format=%(refname)", "refs/exps/").split()
    refs = [r for r in refs if r.count("/") == 4]  # refs/exps/ab/cdef.../<name>
    if names:
        chosen = [r for r in refs if r.rsplit("/", 1)[1] in names]
        missing = set(names) - {r.rsplit("/", 1)[1] for r in chosen}
        if missing:
            raise UserError(f"no experiment named {', '.join(sorted(missing))}: see `dvc exp list --all-commits`")
        return chosen
    sha = git("rev-parse", baseline or "HEAD").strip()
    chosen = [r for r in refs if r.startswith(f"refs/exps/{sha[:2]}/{sha[2:]}/")]
    if not chosen:
        raise UserError(f"no experiments on baseline {sha[:7]}: queue them first (README, 'Label efficiency'), "
                        f"or pass --baseline REV / --exp NAME ...")
    return chosen


def read_experiment(ref: str) -> dict:
    def show(path: str) -> str:
        return git("show", f"{ref}:{path}")
    try:
        compare = json.loads(show("metrics/compare.json"))
    except UserError as e:
        raise UserError(f"experiment {ref.rsplit('/', 1)[1]} has no metrics/compare.json: did it fail?") from e
    return {
        "name": ref.rsplit("/", 1)[1],
        "baseline": ref.split("/")[2] + ref.split("/")[3],
        "finished": int(git("log", "-1", "--format=%ct", ref).strip()),
        "params": yaml.safe_load(show("params.yaml")),
        "compare": compare,
        "pretrain": json.loads(show("metrics/pretrain/metrics.json")),
        "probe": json.loads(show("metrics/linear_probe.json")),
    }


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_same_study(experiments: list[dict], free: set[str] | tuple[str, ...] = tuple(IGNORED_PARAMS),
                     why: str = "a report compares fractions of one study; choose them with --exp") -> None:
    """Every experiment must share every param but those whose top-level key is in `free`."""
    base = flatten(experiments[0]["params"])
    for exp in experiments[1:]:
        other = flatten(exp["params"])
        differ = sorted(k for k in base.keys() | other.keys()
                        if k.split(".")[0] not in free and base.get(k) != other.get(k))
        if differ:
            raise UserError(f"experiments {experiments[0]['name']} and {exp['name']} differ in {', '.join(differ)}: "
                            f"{why}")


def build_study(experiments: list[dict]) -> dict:
    """The numbers the results section shows, newest experiment per fraction."""
    check_same_study(experiments)
    newest: dict[float, dict] = {}
    for exp in sorted(experiments, key=lambda e: e["finished"]):
        newest[float(exp["params"]["fraction"])] = exp
    fractions = sorted(newest, reverse=True)
    primary_p = holm([newest[f]["compare"]["tests"]["best_f1_macro"]["difference"]["p"] for f in fractions])
    params = experiments[0]["params"]
    data = params["data"]
    pretrain_wall = max(e["pretrain"].get("wall_seconds", 0.0) for e in newest.values())
    wall = pretrain_wall + sum(e["compare"]["stage_wall_seconds"] - e["pretrain"].get("wall_seconds", 0.0)
                               for e in newest.values())
    per_fraction = []
    for f, p in zip(fractions, primary_p):
        c = newest[f]["compare"]
        per_fraction.append({
            "fraction": f, "experiment": newest[f]["name"], "labelled_size": c["labelled_size"],
            "tests": c["tests"], "primary_p_holm_over_fractions": p, "convergence": c["convergence"],
            "threshold_val_f1": c["threshold_val_f1"], "per_class_f1": c["per_class_f1"], "curves": c["curves"],
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
        "pretext": first["compare"]["pretext"] | {"task": params["pretext"]["task"],
                                                   "epochs": params["pretext"]["epochs"]},
        "finetune_epochs": params["finetune"]["epochs"],
        "dataset": {"source": data["source"],
                    "origin": dataset_name(data),
                    "md5": data.get("md5") if data["source"] == "cifar10" else None,
                    "test_size": first["compare"]["test_size"]},
        "device": first["compare"]["device"],
        "commit": first["baseline"][:10],
        "experiments": [newest[f]["name"] for f in fractions],
        "wall_seconds": wall,
        "pretrain_wall_seconds": pretrain_wall,
    }


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(s: dict, digits: int = 4) -> str:
    if s["ci_low"] is None:
        return _num(s["mean"], digits)
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def render(study: dict) -> str:
    """The Markdown results section (between the markers, markers excluded)."""
    conf = f"{study['confidence']:.0%}"
    n = len(study["seeds"])
    d = study["dataset"]
    lines = [
        f"**What was run.** Device: {study['device']}. Dataset: {d['origin']} ({d['source']}"
        + (f", md5 {d['md5']}" if d["md5"] else "") + f"), {study['fractions'][0]['labelled_size']:,} labelled "
        f"training images at 100 %, {d['test_size']:,} test images. Profile `{study['profile']}` "
        f"({study['model']}, pretext epochs: {study['pretext']['epochs']}, fine-tune epochs: "
        f"{study['finetune_epochs']}), seeds {study['seeds']}, code at commit `{study['commit']}`, experiments "
        + ", ".join(f"`{e}`" for e in study["experiments"])
        + f". Stage wall time, summed: {_minutes(study['wall_seconds'])} (pretraining "
        f"{_minutes(study['pretrain_wall_seconds'])}, run once and reused by every fraction).",
        "",
        f"**Primary endpoint: test macro-F1 at the validation-selected epoch**, mean over {n} seeds with its "
        f"{conf} t interval; pretrained - scratch as a paired t test over seeds (df = {n - 1}), p-values "
        f"Holm-corrected over the {len(study['fractions'])} fractions.",
        "",
        "| labels | labelled images | scratch | pretrained | difference (paired) | p | p (Holm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fr in study["fractions"]:
        t = fr["tests"]["best_f1_macro"]
        lines.append(f"| {fr['fraction']:.0%} | {fr['labelled_size']:,} | {_ci(t['scratch'])} | "
                     f"{_ci(t['pretrained'])} | {_ci(t['difference'])} | {_p(t['difference']['p'])} | "
                     f"{_p(fr['primary_p_holm_over_fractions'])} |")
    lines += ["", f"**Every metric** (mean ± standard deviation over seeds; difference = paired mean with its {conf} "
              "interval; secondary p-values Holm-corrected within each fraction over the six secondary metrics, the "
              "primary's p uncorrected here):", "",
              "| labels | metric | scratch | pretrained | difference | p (Holm) |", "|---|---|---|---|---|---|"]
    for fr in study["fractions"]:
        for key, label in METRICS:
            t = fr["tests"][key]
            sd = {i: "" if t[i]["std"] is None else f" ± {t[i]['std']:.4f}" for i in INITS}
            lines.append(f"| {fr['fraction']:.0%} | {label} | {t['scratch']['mean']:.4f}{sd['scratch']} | "
                         f"{t['pretrained']['mean']:.4f}{sd['pretrained']} | {_ci(t['difference'])} | "
                         f"{_p(t['difference']['p_holm'])} |")
    lines += ["", "**Convergence and cost** (threshold: validation macro-F1 at "
              "`compare.plateau` of the better init's mean best; steps and seconds averaged over the seeds "
              "that reached it; compute-fair adds the pretraining's seconds shared over the fractions):", "",
              "| labels | threshold | init | runs reaching | steps | seconds | seconds incl. pretraining | best epochs |",
              "|---|---|---|---|---|---|---|---|"]
    for fr in study["fractions"]:
        for init in INITS:
            c = fr["convergence"][init]
            fair = c["seconds_with_pretraining"] if init == "pretrained" else c["seconds"]
            lines.append(f"| {fr['fraction']:.0%} | {fr['threshold_val_f1']:.4f} | {init} | {c['runs_reaching']} / "
                         f"{c['runs']} | {_num(c['steps'], 0)} | {_num(c['seconds'], 0)} | {_num(fair, 0)} | "
                         f"{', '.join(map(str, fr['best_epochs'][init]))} |")
    header = " | ".join(f"{fr['fraction']:.0%} {i[:4]}." for fr in study["fractions"] for i in INITS)
    lines += ["", "**Per-class test F1** (mean over seeds):", "", f"| class | {header} |",
              "|---" * (1 + 2 * len(study["fractions"])) + "|"]
    for k, cls in enumerate(study["classes"]):
        cells = " | ".join(f"{fr['per_class_f1'][i][k]:.3f}" for fr in study["fractions"] for i in INITS)
        lines.append(f"| {cls} | {cells} |")
    pre = study["pretext"]
    metric = pre.get("metric") or "accuracy"  # studies made before the pretext registry: context, accuracy
    train, held = pre.get("final_train", pre.get("final_train_accuracy")), pre.get("final_heldout",
                                                                                   pre.get("final_heldout_accuracy"))
    chance = pre.get("chance", 1 / 8 if pre["task"] == "context" else None)
    chance_text = f" (chance {chance:.3f})" if chance else ""
    controls = "".join(f", control {name.replace('_', ' ')} {value:.3f}"
                       for name, value in pre.get("controls", {}).items())
    lines += ["", f"**Pretext** ({pre['task']}): final training {metric} {train:.3f}, held-out "
              f"{held:.3f}{chance_text}{controls}; per-epoch probe on validation images: "
              f"random extractor {pre['probe_random_extractor']:.3f}, pretrained {pre['probe_pretrained_extractor']:.3f}.",
              "", "**What holds.** " + verdict(study), "",
              f"![label efficiency]({FIGURES['label_efficiency'].as_posix()})",
              f"![validation curves per fraction]({FIGURES['curves'].as_posix()})"]
    return "\n".join(lines) + "\n"


def verdict(study: dict) -> str:
    """One generated sentence per fraction on the primary endpoint: no hand-written claims."""
    parts = []
    for fr in study["fractions"]:
        d = fr["tests"]["best_f1_macro"]["difference"]
        p = fr["primary_p_holm_over_fractions"]
        if p is None:
            parts.append(f"at {fr['fraction']:.0%} one seed allows no test")
            continue
        direction = "higher" if d["mean"] > 0 else "lower"
        sure = ("significant" if p < 0.05 else "not significant") + f" at 0.05 after Holm, p = {_p(p)}"
        parts.append(f"at {fr['fraction']:.0%} of the labels pretrained is {direction} by {abs(d['mean']):.4f} "
                     f"test macro-F1 ({sure})")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + (
        ". With few seeds the intervals are wide: a non-significant difference is no evidence of no effect. "
        "Seeds vary the fine-tune (head and scratch initialisation, batch order, augmentation), not the split "
        "or the one pretraining, so the intervals do not include those sources of variance.")


def splice(readme: str, section: str, begin: str = BEGIN, end: str = END) -> str:
    """`readme` with the text between the markers replaced by `section`."""
    if begin not in readme or end not in readme:
        raise UserError(f"{README} lacks the markers {begin} ... {end}")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{section}{end}{tail}"


def readme_section(readme: str, begin: str = BEGIN, end: str = END) -> str:
    return readme.split(begin, 1)[1].split(end, 1)[0].lstrip("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="commit whose experiments to report (default HEAD)")
    parser.add_argument("--exp", nargs="+", help="experiment names instead")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    experiments = [read_experiment(r) for r in experiment_refs(args.baseline, args.exp)]
    study = build_study(experiments)
    save_json(study, STUDY_JSON)
    stats = {i: [fr["tests"]["best_f1_macro"][i] for fr in study["fractions"]] for i in INITS}
    fractions = [fr["fraction"] for fr in study["fractions"]]
    figures.label_efficiency(fractions, stats, FIGURES["label_efficiency"])
    figures.fraction_curves({fr["fraction"]: fr["curves"] for fr in study["fractions"]}, FIGURES["curves"])
    args.readme.write_text(splice(args.readme.read_text(), render(study)))
    print(f"report: {len(fractions)} fractions ({', '.join(study['experiments'])}) -> {STUDY_JSON}, "
          f"{', '.join(map(str, FIGURES.values()))}, {args.readme}")


if __name__ == "__main__":
    run_stage(main, check=False)  # not a stage: the one-line errors, without the params check
