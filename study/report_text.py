"""The report's text: the results section of docs/results.md (`render`) and the README's short answer
(`render_answer`), both pure functions of metrics/study.json, so a test checks that the documents show exactly
what it holds. Every sentence is generated from the numbers and the protocol's rules: no hand-written claims."""

from __future__ import annotations

from pathlib import Path

from selfsup.analysis.stats import mean_ci
from study.markdown import ci, minutes, num, p_value
from study.records import machine_label, machines
from study.results import INITS, METRICS

FIGURES = {"label_efficiency": Path("plots/label_efficiency.png"), "curves": Path("plots/fraction_curves.png")}
RESULTS_DOC = Path("docs/results.md")
RUN_LOG = Path("metrics/study_run.json")  # python -m study run: each invocation's wall clock, and their sum
PENDING = ("The study under `protocol.yaml` has not run yet: `python -m study run` runs it and writes its "
           "answer here.\n")  # what both documents hold until it has (no metrics/study.json)


def pct(f: float) -> str:
    return f"{f:.0%}"


def arm_label(a: dict, at: str = " ") -> str:
    """An arm in the tables: 'context 10%' (`at` " at ": 'context at 10%'), or 'context 1% (2x budget)' for a
    described arm at another budget."""
    factor = a.get("budget_factor", 1)
    return f"{a['pretext']}{at}{pct(a['fraction'])}" + (f" ({factor}x budget)" if factor != 1 else "")


def verdict(e: dict, protocol: dict) -> str:
    """What the protocol lets one endpoint say, in words: a gain (the test rejects at alpha: the primary
    uncorrected, a secondary after Holm), no gain (equivalence within the margin shown), or neither."""
    if not e["run"]:
        return "not run"
    d, alpha, margin = e["difference"], protocol["alpha"], protocol["margin"]
    if e["n"] < 2:
        return f"not tested (one seed, so no interval): {d['mean']:+.4f} macro-F1, described only"
    p = d["p"] if e["primary"] else e.get("p_holm")
    gain = f"{d['mean']:+.4f}" + ("" if d["ci_low"] is None else f" [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")
    if p is not None and p < alpha:
        return f"{'yes' if d['mean'] > 0 else 'no, it hurts'}: {gain} macro-F1"
    eq = e["equivalence"]
    eq_p = eq["p"] if e["primary"] else eq.get("p_holm")
    if eq["equivalent"]:
        return (f"no: {gain}, equivalent to no gain within ±{margin:g} (p = {p_value(eq_p)}"
                + ("" if e["primary"] else ", Holm") + ")")
    return (f"not shown either way: {gain}, neither a significant gain nor equivalence within ±{margin:g} "
            f"({power_text(e, margin)})")


def power_text(e: dict, margin: float) -> str:
    """An inconclusive endpoint's power to detect a gain of the margin: as planned at the assumed spread and, where
    the seeds' own spread differs, at that one (what the planned figure was worth)."""
    planned, seen, sd = e["power"], e.get("power_observed"), e["difference"]["std"]
    if planned["assumed_sd"] is None:  # no spread was planned: what the seeds showed alone
        return ("its seeds' power was not planned" if seen is None else
                f"its {e['n']} seeds had power {seen['detect_margin']:.2f} to detect a gain of {margin:g} at the "
                f"spread they showed, {sd:.4f}")
    text = (f"its {e['n']} seeds were planned for power {planned['detect_margin']:.2f} to detect a gain of "
            f"{margin:g} at a spread of {planned['assumed_sd']:.4f}")
    if seen is None or f"{sd:.4f}" == f"{planned['assumed_sd']:.4f}":
        return text
    return text + f"; at the {sd:.4f} they showed, {seen['detect_margin']:.2f}"


def capped(e: dict, proto: dict) -> str:
    """The caveat of an endpoint whose fine-tune budget the study's time limit held below its validation plateau
    (the protocol's `capped`): its gain is the gain at that budget, not at convergence."""
    if e["fraction"] not in proto.get("capped", []):
        return ""
    return f" (at {proto['budgets'][str(e['fraction'])]} epochs, a budget capped short of its validation plateau)"


def endpoint_table(study: dict) -> list[str]:
    """The protocol's endpoints, the primary first."""
    proto = study["protocol"]
    lines = ["| endpoint | labelled images | seeds | scratch | pretrained | gain [95% CI] | p | p (Holm) | "
             f"equivalent within ±{proto['margin']:g}? (TOST p; Holm) |", "|---|---|---|---|---|---|---|---|---|"]
    for e in study["endpoints"]:
        name = f"{e['pretext']} at {pct(e['fraction'])}" + (" **(primary)**" if e["primary"] else "")
        if not e["run"]:
            lines.append(f"| {name} | | {e['power']['seeds']} | not run | | | | | |")
            continue
        holm_p = "primary: alone" if e["primary"] else p_value(e.get("p_holm"))
        if not e["primary"] and e["difference"]["p"] is None:
            holm_p = "1 (untested, counted)"
        eq = e["equivalence"]
        eq_text = "n/a" if eq["p"] is None else f"{'yes' if eq['equivalent'] else 'no'} ({p_value(eq['p'])}" + (
            ")" if e["primary"] else f"; {p_value(eq.get('p_holm'))})")
        lines.append(f"| {name} | {e['labelled_size']:,} | {e['n']} | {ci(e['scratch'])} | {ci(e['pretrained'])} | "
                     f"{ci(e['difference'])} | {p_value(e['difference']['p'])} | {holm_p} | {eq_text} |")
    return lines


def ssl_table(study: dict) -> list[str]:
    """Per pretext: frozen-feature probe and kNN (test accuracy) and the fine-tuned gain at each fraction."""
    fractions = sorted({a["fraction"] for a in study["arms"]})
    lines = ["| pretext | pretext held-out | pretraining (s, mean) | probe and kNN labels | "
             "linear probe: random -> pretrained | kNN: random -> pretrained | "
             + " | ".join(f"fine-tuned gain at {pct(f)}" for f in fractions) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(fractions)]
    for row in study["ssl"]:
        knn = "n/a" if row["knn"] is None else f"{row['knn']['scratch']:.3f} -> {row['knn']['pretrained']:.3f}"
        gains = [ci(row["finetune_gain"][str(f)]) if str(f) in row["finetune_gain"] else "-" for f in fractions]
        lines.append(f"| {row['pretext']} | {row['metric']} {row['heldout']:.3f} | {row['pretrain_seconds']:.0f} | "
                     f"{probe_labels(row)} | {row['probe']['scratch']:.3f} -> {row['probe']['pretrained']:.3f} | {knn} | "
                     + " | ".join(gains) + " |")
    return lines


def probe_labels(row: dict) -> str:
    """The labels a pretext's reported probe and kNN were trained on: its reference arm's fraction and images."""
    return f"{pct(row['fraction'])} ({row['labelled_size']:,})"


def probe_table(study: dict) -> list[str]:
    """Per pretext and label share: probe and kNN accuracy, random and pretrained extractor."""
    lines = ["| pretext | labels | seeds | linear probe: random | pretrained | kNN: random | pretrained |",
             "|---|---|---|---|---|---|---|"]
    for r in study["probes"]:
        lines.append(f"| {r['pretext']} | {r['labelled_size']:,} ({pct(r['fraction'])}) | {len(r['seeds'])} | "
                     f"{ci(r['probe_scratch'])} | {ci(r['probe_pretrained'])} | {ci(r['knn_scratch'])} | "
                     f"{ci(r['knn_pretrained'])} |")
    return lines


def over_runs(runs: list[dict], key: str) -> str:
    """Mean [95 % interval] of a per-run count over the runs that have it ('never' where none has)."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return "never" if not values else ci(mean_ci(values), 1)


def machine_count(ran: list[dict]) -> int:
    """How many kinds of machine the recorded arms ran on (an arm run in parts may name several)."""
    return len({machine_label(m) for c in ran for m in machines(c["machine"])})


def cost_table(study: dict) -> list[str]:
    """Each arm's machine, planned and measured minutes, and the totals."""
    lines = ["| arm | machine | planned | measured |", "|---|---|---|---|"]
    for c in study.get("cost", []):
        m = c["machine"]
        where = "not run" if m is None else machine_label(m)
        measured = "-" if c["wall_seconds"] is None else minutes(c["wall_seconds"])
        lines.append(f"| {c['arm']} | {where} | {minutes(c['planned_seconds'])} | {measured} |")
    ran = [c for c in study.get("cost", []) if c["wall_seconds"] is not None]
    lines.append(f"| all | {machine_count(ran)} machine(s) | "
                 f"{minutes(sum(c['planned_seconds'] for c in study.get('cost', [])))} | "
                 f"{minutes(sum(c['wall_seconds'] for c in ran))} ({len(ran)} arms) |")
    return lines


def crossover_lines(study: dict) -> list[str]:
    """Where pretraining stops paying, per pretext: the protocol's declared descriptive reading of the curve."""
    margin = study["protocol"]["margin"]
    lines = []
    for pretext, c in study.get("crossover", {}).items():
        if len(c["fractions"]) < 2:
            continue
        if c["first_inside"] is None:
            where = f"at none of the tested shares ({', '.join(pct(f) for f in c['fractions'])})"
        elif c["last_outside"] is None:
            where = f"already at the smallest tested share, {pct(c['first_inside'])}, and at every larger one"
        else:
            where = (f"from {pct(c['first_inside'])} on (at {pct(c['last_outside'])} it did not), so the crossover "
                     f"lies between {pct(c['last_outside'])} and {pct(c['first_inside'])}")
        lines.append(f"- **Where does {pretext} stop paying?** Its gain's 95 % interval lies inside ±{margin:g} "
                     f"{where} (read off the curve, not tested).")
    return lines


def questions(study: dict) -> list[str]:
    """The README's plain answers: the primary, the key secondary at the smallest fraction, the other pretext,
    and the cost."""
    proto = study["protocol"]
    primary = study["endpoints"][0]
    lines = [f"- **Does {primary['pretext']} pretraining help at {pct(primary['fraction'])} of the labels** "
             f"(the primary endpoint)? {verdict(primary, proto)}."]
    for e in study["endpoints"][1:]:
        if e["pretext"] == primary["pretext"]:
            lines.append(f"- At {pct(e['fraction'])}{capped(e, proto)}? {verdict(e, proto)}.")
    for e in study["endpoints"][1:]:
        if e["pretext"] != primary["pretext"]:
            lines.append(f"- Fine-tuned from **{e['pretext']}** at {pct(e['fraction'])}{capped(e, proto)}? "
                         f"{verdict(e, proto)}.")
    lines += crossover_lines(study)
    probes = {row["pretext"]: row for row in study["ssl"]}
    if len(probes) > 1:
        ref = next(iter(probes.values()))
        shared = len({r["fraction"] for r in probes.values()}) == 1  # else each pretext's labels beside it
        trained = f", trained on {pct(ref['fraction'])} of the labels ({ref['labelled_size']:,} images)" if shared else ""
        lines.append(f"- Which pretext transfers better, frozen? linear probe test accuracy{trained}: "
                     + ", ".join(f"{p} {r['probe']['pretrained']:.3f}" + ("" if shared else f" ({probe_labels(r)})")
                                 for p, r in probes.items())
                     + f" (random extractor {ref['probe']['scratch']:.3f}); kNN "
                     + ", ".join(f"{p} {r['knn']['pretrained']:.3f}" for p, r in probes.items() if r["knn"]) + ".")
    cost = "; ".join(f"{p} pretraining {minutes(s)} a seed" for p, s in
                     ((r["pretext"], r["pretrain_seconds"]) for r in study["ssl"]))
    run = study.get("study_run")  # studies before the per-arm record logged their invocations instead
    ran = [c for c in study.get("cost", []) if c["wall_seconds"] is not None]
    if run:
        clock = (f"the whole study {minutes(run['wall_seconds'])} of wall clock ({len(run['sessions'])} invocation(s) "
                 f"of `python -m study run`, {RUN_LOG.as_posix()}), {minutes(study['wall_seconds'])} of it in stages")
    elif ran:
        clock = (f"the recorded arms {minutes(sum(c['wall_seconds'] for c in ran))} of wall clock ({len(ran)} arms, "
                 f"{machine_count(ran)} kind(s) of machine: docs/results.md)")
    else:
        clock = f"the whole study {minutes(study['wall_seconds'])} of stage time"
    lines.append(f"- **What does it cost?** {cost}; {clock}, on {study['device']}.")
    lines.append(f"- **Numerics.** {replicate_text(study)}")
    return lines


def replicate_text(study: dict) -> str:
    """The primary in fp32 beside the study's numerics, in one sentence."""
    rep = study.get("fp32_replicate", {"status": "not run"})
    if rep["status"] == "the study ran in fp32":
        why = ("protocol.yaml pins it, so any of our CPUs can carry the study on"
               if study["protocol"].get("numerics", {}).get("precision") == "fp32" else "this CPU has no bf16")
        return f"The study ran in fp32 ({why}), so the primary is its own fp32 replicate."
    if rep["status"] == "not run":
        return "The fp32 replicate of the primary has not run."
    words = "agrees with" if rep["agree"] else "falls outside the interval of"
    return (f"The primary again in fp32 (`{rep['experiment']}`): gain {ci(rep['difference'])}, which {words} the "
            f"{rep['precision']} study's; " + ("the answer does not hang on the numerics." if rep["agree"] else
                                               "the numerics move the answer: read it with that in mind."))


def render_answer(study: dict) -> str:
    """The README's short answer: the plain answers, the endpoint table and the figure."""
    proto = study["protocol"]
    d = study["dataset"]
    lines = questions(study) + [
        "",
        f"Test macro-F1 after each run's fixed budget, mean over seeds [{study['confidence']:.0%} t interval]; gain = "
        f"pretrained - scratch, paired over seeds; judged as [protocol.yaml](protocol.yaml) (sha1 "
        f"`{proto['sha1'][:12]}`) declared before the runs: the primary alone; the "
        f"{sum(not e['primary'] for e in study['endpoints'])} declared secondaries one Holm family (an untested one "
        f"counts with p = 1), for a gain and for equivalence by two one-sided tests alike.", ""] + endpoint_table(study) + [
        "",
        f"Profile `{study['profile']}` ({study['model']}), {d['origin']}, device {study['device']}, code at commit "
        f"`{study['commit']}`. Everything else (probe and kNN per pretext, the four questions per arm, every "
        f"metric, power): [docs/results.md]({RESULTS_DOC.as_posix()}).", "",
        f"![label efficiency]({FIGURES['label_efficiency'].as_posix()})"]
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


def render(study: dict) -> str:
    """The Markdown results section (between the markers, markers excluded)."""
    proto = study["protocol"]
    conf = f"{study['confidence']:.0%}"
    d = study["dataset"]
    budgets = ", ".join(f"{e} at {pct(float(f))}" for f, e in proto["budgets"].items())
    lines = [
        f"**What was run.** The protocol [protocol.yaml](../protocol.yaml) (sha1 `{proto['sha1'][:12]}`): "
        f"{proto['question']} Arms: " + "; ".join(
            f"{arm_label(a, ' at ')} (`{a['experiment']}`, seeds {a['seeds']})" for a in study["arms"])
        + (f"; not run: {', '.join(study['missing_arms'])}" if study["missing_arms"] else "")
        + f". Device: {study['device']}. Dataset: {d['origin']} ({d['source']}"
        + (f", md5 {d['md5']}" if d["md5"] else "") + f"), {d['test_size']:,} test images. Profile "
        f"`{study['profile']}` ({study['model']}, pretext epochs {study['pretext_epochs']}, fine-tune budgets "
        f"{budgets} epochs, chosen on validation: the doubling table below), each run keeping its last epoch. "
        f"Code at commit `{study['commit']}`" + numerics_text(study.get("numerics"))
        + f". Stage wall time, each stage once: {minutes(study['wall_seconds'])}.",
        "",
        f"**Endpoints** (declared in the protocol; {conf} t intervals over seeds; the primary tested alone, the "
        f"{sum(not e['primary'] for e in study['endpoints'])} declared secondaries one Holm family, its size the "
        f"declared one (an endpoint that could not be tested counts with p = 1), for a gain and for equivalence "
        f"(two one-sided tests against ±{proto['margin']:g}) alike; alpha {proto['alpha']:g}):", "",
    ] + endpoint_table(study) + ["", "What each endpoint lets one say:", ""] + [
        f"- {e['pretext']} at {pct(e['fraction'])}{capped(e, proto)}: {verdict(e, proto)}." for e in study["endpoints"]]
    lines += ["", f"**Power**, declared in the protocol before the runs (the standard deviation of a seed's paired "
              f"gain assumed per fraction: {proto['sd_source']}):", "",
              "| endpoint | seeds | assumed sd | power to detect a gain of the margin | "
              "power to show equivalence (true gain 0) | observed sd | power at the observed sd: gain, equivalence |",
              "|---|---|---|---|---|---|---|"]
    for e in study["endpoints"]:
        observed = num(e["difference"]["std"]) if e["run"] else "not run"
        seen = e.get("power_observed")
        seen = "" if seen is None else f"{seen['detect_margin']:.2f}, {seen['show_equivalence']:.2f}"
        if e["power"]["assumed_sd"] is None:  # seeds and spread left to the budget search, not made yet
            lines.append(f"| {e['pretext']} at {pct(e['fraction'])} | not chosen yet | | | | {observed} | {seen} |")
            continue
        lines.append(f"| {e['pretext']} at {pct(e['fraction'])} | {e['power']['seeds']} | "
                     f"{e['power']['assumed_sd']:.4f} | {e['power']['detect_margin']:.2f} | "
                     f"{e['power']['show_equivalence']:.2f} | {observed} | {seen} |")
    if "probes" in study:  # studies before the per-arm record have none
        lines += ["", "**Frozen features at every label share** (test accuracy, mean over seeds [95 % interval]: a "
                  "logistic-regression probe and a weighted kNN (k 20) on the frozen extractor, random and pretrained, "
                  "fit on that share's labelled images; 45,000 is the whole labelled pool):", ""] + probe_table(study)
    if "cost" in study:  # studies before the per-arm record have none
        lines += ["", "**Where and how long each arm ran** (planned: what the arm adds to the study in running order "
                  "at the protocol's `estimate`, before any ran; measured: the wall clock of its `dvc exp run` as "
                  "`python -m study run` timed it, stages restored from DVC's run-cache included):", ""] + cost_table(study)
    lines += ["", "**Frozen features and fine-tuning, per pretext** (as the SSL libraries report: test accuracy of a "
              "linear probe and of a weighted kNN (k 20) on the frozen extractor, random -> pretrained; the "
              "fine-tuned macro-F1 gain with its interval):", ""] + ssl_table(study)
    lines += ["", "**The four questions, per arm** (mean over seeds [95 % t interval]; loss: epochs until validation "
              "loss first comes within the plateau share of the lower mean minimum, over the runs that got there; "
              "metric: mean validation macro-F1 over epochs; plateau: validation macro-F1 reaches the common "
              "threshold, epochs and seconds over the runs that did, compute-fair adds the seed's pretraining shared "
              "over the fractions; final: test macro-F1 after the last epoch):", "",
              "| arm | init | loss fell: epochs | metric rose: val F1 area | plateau reached: runs, epochs | "
              "seconds | seconds incl. pretraining | final test F1 |",
              "|---|---|---|---|---|---|---|---|"]
    for a in study["arms"]:
        for init in INITS:
            c = a["convergence"][init]
            fair = c["seconds_with_pretraining"] if init == "pretrained" else c["seconds"]
            lines.append(f"| {arm_label(a)} | {init} | {over_runs(a['runs'][init], 'epochs_to_loss_threshold')} "
                         f"({c['runs_reaching_loss']}/{c['runs']}) | {ci(a['tests']['val_f1_auc'][init])} | "
                         f"{c['runs_reaching']}/{c['runs']}, {over_runs(a['runs'][init], 'epochs_to_threshold')} | "
                         f"{num(c['seconds'], 0)} | {num(fair, 0)} | {ci(a['tests'][proto['metric']][init])} |")
    lines += ["", f"**Every metric, described** (mean ± standard deviation over seeds; difference = paired mean with "
              f"its {conf} interval; not tested: the endpoints above are the tests):", "",
              "| arm | metric | scratch | pretrained | difference |", "|---|---|---|---|---|"]
    for a in study["arms"]:
        for key, label in METRICS:
            t = a["tests"][key]
            sd = {i: "" if t[i]["std"] is None else f" ± {t[i]['std']:.4f}" for i in INITS}
            lines.append(f"| {arm_label(a)} | {label} | {t['scratch']['mean']:.4f}"
                         f"{sd['scratch']} | {t['pretrained']['mean']:.4f}{sd['pretrained']} | {ci(t['difference'])} |")
    header = " | ".join(f"{a['pretext'][:4]}. {pct(a['fraction'])} {i[:4]}." for a in study["arms"] for i in INITS)
    lines += ["", "**Per-class test F1** (mean over seeds):", "", f"| class | {header} |",
              "|---" * (1 + 2 * len(study["arms"])) + "|"]
    for k, cls in enumerate(study["classes"]):
        cells = " | ".join(f"{a['per_class_f1'][i][k]:.3f}" for a in study["arms"] for i in INITS)
        lines.append(f"| {cls} | {cells} |")
    lines += ["", "**Pretexts** (mean over each pretext's pretrainings): " + "; ".join(
        f"{r['pretext']} ({len(r['seeds'])} seeds): final training {r['summary']['metric']} "
        f"{r['summary']['final_train']:.3f}, {pretext_heldout(r['summary'])}" for r in study["ssl"]) + ".",
        "", "**What this does not show.** Each seed is a replicate of the whole chain (labelled subset, "
        "pretraining, fine-tune), so the intervals cover all three; a result that is neither a gain nor "
        "equivalence is no evidence of no effect. One dataset, one backbone, one recipe, and the numerics of the "
        "machines the cost table names: the numbers say nothing about others.", "",
        f"![label efficiency](../{FIGURES['label_efficiency'].as_posix()})",
        f"![validation curves per fraction](../{FIGURES['curves'].as_posix()})"]
    return "\n".join(lines) + "\n"

