"""The report's text: the results section of docs/results.md (`render`) and the README's short answer
(`render_answer`), both pure functions of metrics/study.json, so a test checks that the documents show exactly
what it holds. Every sentence is generated from the numbers: no hand-written claims."""

from __future__ import annotations

from pathlib import Path

from selfsup.analysis.endpoints import PRIMARY
from tools.markdown import ci, epochs, minutes, num, p_value
from tools.study import INITS, METRICS

FIGURES = {"label_efficiency": Path("plots/label_efficiency.png"), "curves": Path("plots/fraction_curves.png")}
RESULTS_DOC = Path("docs/results.md")


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
        + numerics_text(study.get("numerics"))
        + f". Stage wall time, summed: {minutes(study['wall_seconds'])} (pretraining "
        f"{minutes(study['pretrain_wall_seconds'])}, once per seed, reused by every fraction).",
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
            lines.append(f"| {fr['fraction']:.0%} | {init} | {epochs(c['epochs_to_loss'])} "
                         f"({c['runs_reaching_loss']}/{c['runs']}) | {fr['tests']['val_f1_auc'][init]['mean']:.4f} | "
                         f"{c['runs_reaching']}/{c['runs']}, {epochs(c['epochs'])} | {num(c['seconds'], 0)} | "
                         f"{num(fair, 0)} | {fr['tests'][PRIMARY][init]['mean']:.4f} | "
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
            p = f"{p_value(t['difference']['p'])} (primary, uncorrected)" if primary else p_value(t["p_holm"])
            lines.append(f"| {fr['fraction']:.0%} | {label} | {t['scratch']['mean']:.4f}{sd['scratch']} | "
                         f"{t['pretrained']['mean']:.4f}{sd['pretrained']} | {ci(t['difference'])} | {p} |")
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


def numerics_text(numerics: dict | str | None) -> str:
    """What the fine-tunes ran with (precision, processes, compile, library versions), from their record; nothing
    for a study made before runs recorded it."""
    if not numerics:
        return ""
    if isinstance(numerics, str):
        return f"; numerics {numerics}"
    f = numerics["finetune"]
    return (f"; fine-tunes in {f['precision']} on {f['processes']} process(es), compile {str(f['compile']).lower()}, "
            f"torch {f['torch']}, torchvision {f['torchvision']}")


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
        holm_p = "primary: not corrected" if fr["primary"] else p_value(t["p_holm"])
        lines.append(f"| {fr['fraction']:.0%}{mark} | {fr['labelled_size']:,} | {ci(t['scratch'])} | "
                     f"{ci(t['pretrained'])} | {ci(t['difference'])} | {p_value(t['difference']['p'])} | {holm_p} |")
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
        f"{study['device']}, code at commit `{study['commit']}`, {minutes(study['wall_seconds'])} of stage wall "
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
               f"{epochs(c['pretrained']['epochs'])} vs {epochs(c['scratch']['epochs'])} epochs "
               f"(pretrained vs scratch; {c['pretrained']['runs_reaching']} and {c['scratch']['runs_reaching']} of "
               f"{c['scratch']['runs']} runs reached it), {num(c['pretrained']['seconds'], 0)} vs "
               f"{num(c['scratch']['seconds'], 0)} s, or {num(fair, 0)} s for pretrained counting its share of "
               "pretraining")
    best = t[PRIMARY]
    loss = who("epochs_to_loss")
    loss = "as fast for both inits" if loss == "both inits equally" else f"faster for {loss}"
    return (f"**{fr['fraction']:.0%}:** the validation loss fell to within reach of its floor "
            f"({fr['threshold_val_loss']:.3f}) {loss} ({epochs(c['pretrained']['epochs_to_loss'])} vs "
            f"{epochs(c['scratch']['epochs_to_loss'])} epochs, pretrained vs scratch; "
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
                    f"{abs(d['mean']):.4f} test macro-F1, {ci(d)} ({sure} at 0.05, p = {p_value(d['p'])}; the interval "
                    f"is ±{half:.4f} wide).")
    others = [f"{f['fraction']:.0%}: {f['tests'][PRIMARY]['difference']['mean']:+.4f} (Holm p = "
              f"{p_value(f['tests'][PRIMARY]['p_holm'])})" for f in study["fractions"] if not f["primary"]]
    if others:
        text += " Secondary gains at the other fractions: " + "; ".join(others) + "."
    return text + (" Each seed is a replicate of the whole chain (labelled subset, pretraining, fine-tune), so the "
                   "intervals cover all three; with few seeds they are wide, and a non-significant difference is "
                   "no evidence of no effect. One dataset, one backbone and one recipe: the numbers say nothing "
                   "about others.")
