"""The label-efficiency report: the study's experiments (one per label fraction) in one set of results.

    python -m tools.report                 # the experiments of the current commit (dvc exp run --queue ...)
    python -m tools.report --baseline REV  # ... of another baseline commit
    python -m tools.report --exp a b c     # these experiments, by name

Not a DVC stage: it reads across experiments, which DVC keeps as Git refs (refs/exps/...), each commit holding
that run's params.yaml and dvc.lock, and reads each one's metrics/compare.json from DVC's cache. All
experiments must share every param but `fraction` (and the hardware knobs); of several runs at one fraction
the newest is used. The primary endpoint, declared before any run, is the test macro-F1 gain of pretraining at
10 % of the labels (`PRIMARY_FRACTION`: the claim is about scarce labels), tested alone; every other
comparison (the gains at the other fractions, the other metrics) is secondary, its p-values Holm-corrected
over that whole family. Writes metrics/study.json (every number shown), plots/label_efficiency.png,
plots/fraction_curves.png, the full Markdown results (`render`) into docs/results.md and the short answer
(`render_answer`: the primary endpoint table, the verdict, the figure) into README.md, each between its
results markers. Both renders are pure functions of study.json, so a test checks that the documents show
exactly what it holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

from selfsup.analysis import figures
from selfsup.core import paths
from selfsup.config import hardware_knobs
from selfsup.analysis.endpoints import LABELS, PRIMARY, PRIMARY_FRACTION
from selfsup.core.files import save_json
from selfsup.loop.budget import finetune_epochs
from selfsup.core.params import UserError
from selfsup.core.stage import run_stage
from selfsup.analysis.stats import holm

STUDY_JSON = Path("metrics/study.json")
FIGURES = {"label_efficiency": Path("plots/label_efficiency.png"), "curves": Path("plots/fraction_curves.png")}
README = Path("README.md")
RESULTS_DOC = Path("docs/results.md")
BEGIN, END = "<!-- results:begin (written by python -m tools.report) -->", "<!-- results:end -->"
IGNORED_PARAMS = {"fraction"} | hardware_knobs()  # what the numerics record says instead: check_numerics
INITS = paths.INITS
METRICS = list(LABELS.items())  # (key, label), the primary first


def dataset_name(data: dict) -> str:
    """What the `data` params read, by file name: the folder or archive (`data.path`) of a folder source, the
    mirror at `data.url`, or else the source's official archive."""
    from selfsup.sources import OFFICIAL  # imported here: the report needs no torch otherwise
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
    """An experiment's params (in its Git commit) and metrics/compare.json (a DVC output: its commit's
    dvc.lock names it, DVC's cache holds it; `dvc exp pull` fetches both)."""
    import dvc.api  # imported here: only reading experiments needs it
    name = ref.rsplit("/", 1)[1]
    try:
        compare = json.loads(dvc.api.read("metrics/compare.json", repo=".", rev=ref))
    except Exception as e:  # DVC raises several types: not in the commit, not in the cache
        raise UserError(f"experiment {name} has no readable metrics/compare.json ({type(e).__name__}): did it "
                        f"fail? Was it pulled with `dvc exp pull`?") from e
    return {
        "name": name,
        "baseline": ref.split("/")[2] + ref.split("/")[3],
        "finished": int(git("log", "-1", "--format=%ct", ref).strip()),
        "params": yaml.safe_load(git("show", f"{ref}:params.yaml")),
        "compare": compare,
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


def check_numerics(experiments: list[dict]) -> dict[str, dict | None]:
    """The one numerics record (precision, device, processes, compile, torch and torchvision versions) of each
    kind of run (finetune, pretrain, linear_probe) across the experiments; runs made with different numerics
    (or made before runs recorded them) are refused in one line naming the difference."""
    pooled: dict[str, dict | None] = {}
    for exp in experiments:
        for kind, records in exp["compare"].get("numerics", {"finetune": [None]}).items():
            for record in records:
                if record is None:
                    raise UserError(f"experiment {exp['name']} has {kind} runs that record no numerics (made before "
                                    f"runs recorded them): rerun it, or pass --mixed-numerics to pool it anyway")
                first = pooled.setdefault(kind, record)
                differ = {k: (first.get(k), record.get(k)) for k in first.keys() | record.keys()
                          if first.get(k) != record.get(k)}
                if differ:
                    what = "; ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in sorted(differ.items()))
                    raise UserError(f"experiment {exp['name']} has {kind} runs whose numerics differ from the others "
                                    f"({what}): the same seeds give other numbers on other numerics; rerun them on "
                                    f"one machine, or pass --mixed-numerics to pool them anyway")
    return pooled


def build_study(experiments: list[dict], mixed_numerics: bool = False) -> dict:
    """The numbers the results section shows, newest experiment per fraction."""
    check_same_study(experiments)
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


def _epochs(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f}"


def _budgets(study: dict) -> str:
    """The fine-tune epochs: one number when every fraction has it, else each fraction's."""
    epochs = [fr["finetune_epochs"] for fr in study["fractions"]]
    if len(set(epochs)) == 1:
        return str(epochs[0])
    return ", ".join(f"{e} at {fr['fraction']:.0%}" for e, fr in zip(epochs, study["fractions"]))


def _primary(study: dict) -> dict | None:
    return next((fr for fr in study["fractions"] if fr["primary"]), None)


def render(study: dict) -> str:
    """The Markdown results section (between the markers, markers excluded)."""
    conf = f"{study['confidence']:.0%}"
    n = len(study["seeds"])
    d = study["dataset"]
    lines = [
        f"**What was run.** Device: {study['device']}. Dataset: {d['origin']} ({d['source']}"
        + (f", md5 {d['md5']}" if d["md5"] else "") + "), labelled training images: "
        + ", ".join(f"{fr['labelled_size']:,} at {fr['fraction']:.0%}" for fr in study["fractions"])
        + f"; {d['test_size']:,} test images. Profile `{study['profile']}` "
        f"({study['model']}, pretext epochs: {study['pretext']['epochs']}, fine-tune epochs: "
        f"{_budgets(study)}), seeds {study['seeds']}: each seed is a replicate with its own split, "
        f"pretraining and fine-tunes. Code at commit `{study['commit']}`, experiments "
        + ", ".join(f"`{e}`" for e in study["experiments"])
        + f". Stage wall time, summed: {_minutes(study['wall_seconds'])} (pretraining "
        f"{_minutes(study['pretrain_wall_seconds'])}, once per seed, reused by every fraction).",
        "",
        f"**Primary endpoint** (declared before the run): the test macro-F1 gain of pretrained over scratch at "
        f"{study['primary_fraction']:.0%} of the labels, each run's test set scored once at its "
        f"validation-selected epoch; mean over {n} seeds with its {conf} t interval, paired t test (df = {n - 1}), "
        f"tested alone. Every other p-value is secondary, Holm-corrected over all {study['secondary_tests']} "
        "secondary comparisons.",
        "",
    ] + primary_table(study)
    lines += ["", "**The four questions, per fraction** (means over seeds; loss: epochs until validation loss first "
              "comes within the plateau share of the lower mean minimum; metric: mean validation macro-F1 over "
              "epochs; plateau: validation macro-F1 reaches the common threshold, epochs and seconds over the runs "
              "that did, compute-fair adds the seed's pretraining shared over the fractions; best: test macro-F1 "
              "at the validation-selected epoch):", "",
              "| labels | init | loss fell: epochs | metric rose: val F1 area | plateau reached: runs, epochs | "
              "seconds | seconds incl. pretraining | best test F1 | best epochs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for fr in study["fractions"]:
        for init in INITS:
            c = fr["convergence"][init]
            fair = c["seconds_with_pretraining"] if init == "pretrained" else c["seconds"]
            lines.append(f"| {fr['fraction']:.0%} | {init} | {_epochs(c['epochs_to_loss'])} "
                         f"({c['runs_reaching_loss']}/{c['runs']}) | {fr['tests']['val_f1_auc'][init]['mean']:.4f} | "
                         f"{c['runs_reaching']}/{c['runs']}, {_epochs(c['epochs'])} | {_num(c['seconds'], 0)} | "
                         f"{_num(fair, 0)} | {fr['tests'][PRIMARY][init]['mean']:.4f} | "
                         f"{', '.join(map(str, fr['best_epochs'][init]))} |")
    lines += [""] + [f"- {answers(fr)}" for fr in study["fractions"]]
    lines += ["", f"**Every metric** (mean ± standard deviation over seeds; difference = paired mean with its {conf} "
              "interval; p Holm-corrected over the secondary family):", "",
              "| labels | metric | scratch | pretrained | difference | p (Holm) |", "|---|---|---|---|---|---|"]
    for fr in study["fractions"]:
        for key, label in METRICS:
            t = fr["tests"][key]
            sd = {i: "" if t[i]["std"] is None else f" ± {t[i]['std']:.4f}" for i in INITS}
            primary = fr["primary"] and key == PRIMARY
            p = f"{_p(t['difference']['p'])} (primary, uncorrected)" if primary else _p(t["p_holm"])
            lines.append(f"| {fr['fraction']:.0%} | {label} | {t['scratch']['mean']:.4f}{sd['scratch']} | "
                         f"{t['pretrained']['mean']:.4f}{sd['pretrained']} | {_ci(t['difference'])} | {p} |")
    header = " | ".join(f"{fr['fraction']:.0%} {i[:4]}." for fr in study["fractions"] for i in INITS)
    lines += ["", "**Per-class test F1** (mean over seeds):", "", f"| class | {header} |",
              "|---" * (1 + 2 * len(study["fractions"])) + "|"]
    for k, cls in enumerate(study["classes"]):
        cells = " | ".join(f"{fr['per_class_f1'][i][k]:.3f}" for fr in study["fractions"] for i in INITS)
        lines.append(f"| {cls} | {cells} |")
    pre = study["pretext"]
    lines += ["", f"**Pretext** ({pre['task']}, mean over the {n} seeds' pretrainings): final training "
              f"{pre['metric']} {pre['final_train']:.3f}, {pretext_heldout(pre)}; "
              f"per-epoch probe on validation images: random extractor {pre['probe_random_extractor']:.3f}, "
              f"pretrained {pre['probe_pretrained_extractor']:.3f}.",
              "", "**What holds.** " + verdict(study), "",
              f"![label efficiency](../{FIGURES['label_efficiency'].as_posix()})",
              f"![validation curves per fraction](../{FIGURES['curves'].as_posix()})"]
    return "\n".join(lines) + "\n"


def pretext_heldout(pre: dict) -> str:
    """The pretext's held-out score beside its shortcut controls (docs/pretexts.md says what each removes)."""
    chance_text = f" (chance {pre['chance']:.3f})" if pre.get("chance") else ""
    controls = "".join(f", control {name.replace('_', ' ')} {value:.3f}"
                       for name, value in pre.get("controls", {}).items())
    return f"held-out {pre['metric']} {pre['final_heldout']:.3f}{chance_text}{controls}"


def primary_table(study: dict) -> list[str]:
    """The primary metric's table, one row per fraction (the primary fraction marked)."""
    lines = ["| labels | labelled images | scratch | pretrained | difference (paired) | p | p (Holm) |",
             "|---|---|---|---|---|---|---|"]
    for fr in study["fractions"]:
        t = fr["tests"][PRIMARY]
        mark = " **(primary)**" if fr["primary"] else ""
        holm_p = "primary: not corrected" if fr["primary"] else _p(t["p_holm"])
        lines.append(f"| {fr['fraction']:.0%}{mark} | {fr['labelled_size']:,} | {_ci(t['scratch'])} | "
                     f"{_ci(t['pretrained'])} | {_ci(t['difference'])} | {_p(t['difference']['p'])} | {holm_p} |")
    return lines


def render_answer(study: dict) -> str:
    """The README's short answer: the primary endpoint table, the verdict and the label-efficiency figure."""
    d = study["dataset"]
    lines = [f"Test macro-F1 at the validation-selected epoch, mean over {len(study['seeds'])} seeds "
             f"[{study['confidence']:.0%} t interval]; difference = pretrained - scratch, paired over seeds.",
             ""] + primary_table(study) + [
        "", verdict(study), "",
        f"Pretext `{study['pretext']['task']}`, mean over the seeds' pretrainings: "
        f"{pretext_heldout(study['pretext'])} ([docs/pretexts.md](docs/pretexts.md): what each control removes).",
        "",
        f"Profile `{study['profile']}` ({study['model']}), {d['origin']}, seeds {study['seeds']}, device "
        f"{study['device']}, code at commit `{study['commit']}`, {_minutes(study['wall_seconds'])} of stage wall "
        f"time. Everything else (the four questions per fraction, every metric, per-class F1, the pretext): "
        f"[docs/results.md]({RESULTS_DOC.as_posix()}).", "",
        f"![label efficiency]({FIGURES['label_efficiency'].as_posix()})"]
    return "\n".join(lines) + "\n"


def answers(fr: dict) -> str:
    """The four questions for one fraction, in words, from the numbers of the table."""
    c = {i: fr["convergence"][i] for i in INITS}
    t = fr["tests"]

    def who(key: str, lower_first: bool = True) -> str:
        s, p = c["scratch"][key], c["pretrained"][key]
        if s is None and p is None:
            return "neither init"
        if s is None or p is None:
            return "only pretrained" if s is None else "only scratch"
        if s == p:
            return "both inits equally"
        return "pretrained" if (p < s) == lower_first else "scratch"

    auc = {i: t["val_f1_auc"][i]["mean"] for i in INITS}
    fair = c["pretrained"]["seconds_with_pretraining"]
    first = who("epochs")
    first = ("both inits reached the validation plateau ({:.3f}) at the same epoch" if first == "both inits equally"
             else first + " reached the validation plateau ({:.3f}) first").format(fr["threshold_val_f1"])
    plateau = (f"{first}: "
               f"{_epochs(c['pretrained']['epochs'])} vs {_epochs(c['scratch']['epochs'])} epochs "
               f"(pretrained vs scratch; {c['pretrained']['runs_reaching']} and {c['scratch']['runs_reaching']} of "
               f"{c['scratch']['runs']} runs reached it), {_num(c['pretrained']['seconds'], 0)} vs "
               f"{_num(c['scratch']['seconds'], 0)} s, or {_num(fair, 0)} s for pretrained counting its share of "
               "pretraining")
    best = t[PRIMARY]
    loss = who("epochs_to_loss")
    loss = "as fast for both inits" if loss == "both inits equally" else f"faster for {loss}"
    return (f"**{fr['fraction']:.0%}:** the validation loss fell to within reach of its floor "
            f"({fr['threshold_val_loss']:.3f}) {loss} ({_epochs(c['pretrained']['epochs_to_loss'])} vs "
            f"{_epochs(c['scratch']['epochs_to_loss'])} epochs, pretrained vs scratch; "
            f"{c['pretrained']['runs_reaching_loss']} and {c['scratch']['runs_reaching_loss']} of "
            f"{c['scratch']['runs']} runs got there); "
            f"validation macro-F1 rose faster for {'pretrained' if auc['pretrained'] > auc['scratch'] else 'scratch'} "
            f"(area {auc['pretrained']:.3f} vs {auc['scratch']:.3f}); {plateau}; best test macro-F1 "
            f"{best['pretrained']['mean']:.4f} vs {best['scratch']['mean']:.4f}.")


def verdict(study: dict) -> str:
    """Generated sentences on the primary endpoint and the secondary gains: no hand-written claims."""
    fr = _primary(study)
    if fr is None:
        text = (f"This study has no {study['primary_fraction']:.0%} experiment, so the primary endpoint is not "
                "answered; every comparison here is secondary.")
    else:
        d = fr["tests"][PRIMARY]["difference"]
        if d["p"] is None:
            text = "With one seed the primary endpoint allows no test."
        else:
            direction = "higher" if d["mean"] > 0 else "lower"
            sure = "significant" if d["p"] < 0.05 else "not significant"
            half = (d["ci_high"] - d["ci_low"]) / 2
            text = (f"Primary endpoint: at {fr['fraction']:.0%} of the labels pretrained is {direction} by "
                    f"{abs(d['mean']):.4f} test macro-F1, {_ci(d)} ({sure} at 0.05, p = {_p(d['p'])}; the interval "
                    f"is ±{half:.4f} wide).")
    others = [f"{f['fraction']:.0%}: {f['tests'][PRIMARY]['difference']['mean']:+.4f} (Holm p = "
              f"{_p(f['tests'][PRIMARY]['p_holm'])})" for f in study["fractions"] if not f["primary"]]
    if others:
        text += " Secondary gains at the other fractions: " + "; ".join(others) + "."
    return text + (" Each seed is a replicate of the whole chain (labelled subset, pretraining, fine-tune), so the "
                   "intervals cover all three; with few seeds they are wide, and a non-significant difference is "
                   "no evidence of no effect. One dataset, one backbone and one recipe: the numbers say nothing "
                   "about others.")


def splice(readme: str, section: str, begin: str = BEGIN, end: str = END, name: Path = README) -> str:
    """`readme` (the text of the file `name`) with the text between the markers replaced by `section`."""
    if begin not in readme or end not in readme:
        raise UserError(f"{name} lacks the markers {begin} ... {end}: put them where the generated text goes")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{section}{end}{tail}"


def readme_section(readme: str, begin: str = BEGIN, end: str = END) -> str:
    return readme.split(begin, 1)[1].split(end, 1)[0].lstrip("\n")


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
    results_doc = splice(args.results_doc.read_text(), render(study), name=args.results_doc)
    readme = splice(args.readme.read_text(), render_answer(study), name=args.readme)
    args.results_doc.write_text(results_doc)
    args.readme.write_text(readme)
    print(f"report: {len(fractions)} fractions ({', '.join(study['experiments'])}) -> {STUDY_JSON}, "
          f"{', '.join(map(str, FIGURES.values()))}, {args.results_doc}, {args.readme}")


if __name__ == "__main__":
    run_stage(main, check=False)  # not a stage: the one-line errors, without the params check
