"""Choosing the fine-tune budgets on validation: for each label fraction, double the budget until doubling it
once more is shown to gain less than `--tol` validation macro-F1 (at each run's last epoch) for every init.

`--rule bound`: a doubling b -> 2b is worth nothing only when the one-sided 95 % upper confidence
bound of its gain, paired by seed (each seed's 2b run minus its b run, the same split and initial weights), lies
below `--tol`: a doubling whose gain is merely too noisy to tell does not stop it, so with a large seed spread it
takes more seeds or more doublings. `--rule two` (the default): a budget b is taken when the doubling into it (b/2 -> b) and
the one out of it (b -> 2b) both gained less than `--tol` on average over the seeds, for every init: two doublings
in a row, so one noisy small gain does not stop the search, and the budget taken sits between them, not before
them (it costs the runs at 2b). With a doubling's seed-to-seed spread near 0.006, five seeds let the bound rule stop
only where more training hurts (a mean gain below about -0.001), which is why the next study declares `two`.
`--rule mean` is the earliest rule (one doubling's mean gain below `--tol`), which can stop inside the noise;
metrics/budgets.json's choices were made with it.

    python -m study budgets --fractions 0.01 0.1 --start 1 4 --seeds 0 1 2 --out metrics/budgets.json

Every run is one fine-tune with the project's engine, as `finetune@<init>` runs it (same split, batches, head
init, recipe): a fixed budget of `epochs` passes over the 100 % labelled pool, scored once, after its last
epoch, on the seed's validation set (never on test: a test locks the test set away). `--init pretrained` adds
the pretrained init (its extractor from `--pretrained DIR`/seed<seed>.pt, as the pretrain stage writes them),
and a budget then stops doubling only when neither init gains. The recipe is params.yaml's (`model`, `finetune`,
`split.val_fraction`), so compose it for the profile first (`dvc exp run -S profile=cpu` leaves it so).
Finished runs are kept in `--out` and reused when it is run again (same recipe, same kind of CPU: vendor,
family, model, stepping), so it can be stopped and resumed; where the same run was made on two kinds of CPU the
later one counts; a pretrained run is reused only from the same extractor (its file's SHA-1: a pretraining of another
design or seed is another run; runs from an earlier extractor stay in the file as `superseded`); a fraction's
choice stands until an invocation makes one, so pretrained runs at a chosen budget
(`--init scratch pretrained --start B --max B`) add the paired gain's spread without unchoosing it. `--table`
prints the doubling table docs/results.md shows from such a file. `--cap B`: the largest budget a share may take
(what the study's time affords, declared in its protocol's `budget_rule`): a share whose rule has chosen nothing
below B once every seed and init has run B takes B, recorded in the file's `capped` (its gain is then the gain at
B, short of the validation plateau, and the report says so). Not a stage and not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from selfsup.analysis.stats import mean_ci, seeds_needed
from selfsup.core.dataset import load_dataset
from selfsup.core.params import UserError, load_params, param
from selfsup.core.stage import run_stage
from selfsup.subsets import split_indices
from selfsup.finetune import FineTune
from selfsup.loop.precision_choice import cpu_id
from selfsup.loop.training_stage import TrainingStage, stage_precision
from selfsup.training.distributed import Dist
from study.markdown import first_paragraph
from study.protocol import PROTOCOL


MARGIN = 0.01  # the equivalence margin and the primary share a spread's seeds are sized for, and the tolerance,
PRIMARY = 0.1  # where no protocol.yaml names the search file as its budget source (`declared`)


def declared(out: Path, protocol: Path = PROTOCOL) -> dict:
    """What the study's protocol declares for the search file `out`: its margin, its primary share and its budget
    rule's tolerance, where protocol.yaml names `out` as its `budget_source`; else the defaults (MARGIN, PRIMARY,
    tolerance MARGIN). Read from the YAML alone: load_protocol reads the search file, so cannot check it first."""
    doc = yaml.safe_load(protocol.read_text()) if protocol.exists() else None
    if not isinstance(doc, dict) or Path(str(doc.get("budget_source", ""))) != out:
        return {"margin": MARGIN, "primary": PRIMARY, "tol": MARGIN}
    margin = float(doc.get("margin", MARGIN))
    primary = ((doc.get("endpoints") or {}).get("primary") or {}).get("fraction", PRIMARY)
    return {"margin": margin, "primary": float(primary), "tol": float((doc.get("budget_rule") or {}).get("tol", margin))}


def recipe_key(params: dict) -> str:
    """What makes two runs of the same (fraction, init, seed, epochs) the same run: the network, the fine-tune
    recipe but its budget, the validation share, and the pretext the extractor came from."""
    finetune = {k: v for k, v in params["finetune"].items() if k not in ("epochs", "epochs_by_fraction")}
    what = {"model": params["model"], "finetune": finetune, "val_fraction": params["split"]["val_fraction"],
            "pretext": params["pretext"]["task"]}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def extractor_digest(path: Path) -> str:
    """The first 12 hex digits of the SHA-1 of a pretrained extractor's file: which pretraining a pretrained run
    started from."""
    if not path.exists():
        raise UserError(f"{path} not found: pretrain first (`dvc repro pretrain`), or pass --pretrained DIR")
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def fine_tune(params: dict, dataset, meta: dict, fraction: float, seed: int, epochs: int, init: str,
              pretrained: Path) -> dict:
    """One fixed-budget fine-tune, the one `finetune@<init>` runs (selfsup.finetune), on the seed's split as
    the split stage draws it; its validation macro-F1 and loss after the last epoch (test is never read)."""
    device = torch.device("cpu")
    val, lab = split_indices(dataset.train_labels, seed, param(params, "split.val_fraction"), fraction)
    precision = stage_precision(params, device)  # as the stages resolve it
    stage = TrainingStage(params, Dist(), device, precision, time.perf_counter())
    run = FineTune.from_stage(stage, dataset, meta, lab, val, init, seed, pretrained / f"seed{seed}.pt", epochs,
                              test=False)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        stats = run.train_epoch(f"{init} {fraction:g} seed {seed} epoch {epoch}/{epochs}")
    val_metrics = run.validate()
    return {"val_f1_macro": val_metrics["f1_macro"], "val_loss": val_metrics["loss"],
            "train_loss": stats["loss"], "labelled": int(len(lab)), "validation": int(len(val)),
            "seconds": time.perf_counter() - start, "precision": precision, "machine": cpu_id()}


def mean_f1(runs: list[dict], fraction: float, init: str, epochs: int, seeds: list[int]) -> float | None:
    got = [r["val_f1_macro"] for r in runs if (r["fraction"], r["init"], r["epochs"]) == (fraction, init, epochs)
           and r["seed"] in seeds]
    return float(np.mean(got)) if len(got) == len(seeds) else None


def doubling_gain(runs: list[dict], fraction: float, init: str, budget: int, seeds: list[int]) -> np.ndarray | None:
    """Each seed's validation macro-F1 at 2 x `budget` minus at `budget` (None until every seed has both)."""
    score = {(r["epochs"], r["seed"]): r["val_f1_macro"] for r in runs
             if (r["fraction"], r["init"]) == (fraction, init) and r["seed"] in seeds}
    if not all((e, s) in score for e in (budget, 2 * budget) for s in seeds):
        return None
    return np.array([score[(2 * budget, s)] - score[(budget, s)] for s in seeds])


def worthless(gains: np.ndarray, tol: float, rule: str, confidence: float = 0.95) -> bool:
    """Whether a doubling's per-seed gains say it is worth less than `tol`: their mean (`rule` mean), or the
    one-sided `confidence` upper bound of their mean (`rule` bound: t over the seeds)."""
    if rule in ("mean", "two"):
        return float(gains.mean()) < tol
    return mean_ci(gains, 2 * confidence - 1)["ci_high"] < tol  # the two-sided interval's upper end at 2c - 1


def choose(runs: list[dict], fraction: float, inits: list[str], seeds: list[int], tol: float,
           rule: str = "bound") -> int | None:
    """The smallest budget whose doubling is shown worth less than `tol` for every init (see `worthless`); under
    `rule` two, also the doubling into it."""
    budgets = sorted({r["epochs"] for r in runs if r["fraction"] == fraction})
    for b in budgets:
        gains = [doubling_gain(runs, fraction, i, b, seeds) for i in inits]
        if rule == "two":
            gains += [doubling_gain(runs, fraction, i, b // 2, seeds) for i in inits]
        if all(g is not None for g in gains) and all(worthless(g, tol, rule) for g in gains):
            return b
    return None


def ran_all(runs: list[dict], fraction: float, inits: list[str], seeds: list[int], epochs: int) -> bool:
    """Whether every init and seed has a run of `epochs` at `fraction`."""
    done = {(r["init"], r["seed"]) for r in runs if (r["fraction"], r["epochs"]) == (fraction, epochs)}
    return all((i, s) in done for i in inits for s in seeds)


def paired_differences(runs: list[dict], fraction: float, epochs: int, seeds: list[int]) -> list[float]:
    """Per seed that has both, pretrained - scratch validation macro-F1 at this budget."""
    score = {(r["init"], r["seed"]): r["val_f1_macro"] for r in runs if (r["fraction"], r["epochs"]) == (fraction, epochs)}
    return [score[("pretrained", s)] - score[("scratch", s)] for s in seeds
            if ("pretrained", s) in score and ("scratch", s) in score]


def paired_gain(runs: list[dict], fraction: float, epochs: int, seeds: list[int]) -> str:
    """Mean ± standard deviation over seeds of pretrained - scratch validation macro-F1: the spread of a seed's
    paired gain, which sizes the study's seeds (docs/protocol.md)."""
    d = paired_differences(runs, fraction, epochs, seeds)
    return "-" if len(d) < 2 else f"{np.mean(d):+.4f} ± {np.std(d, ddof=1):.4f}"


def paired_sd(runs: list[dict], fraction: float, epochs: int, seeds: list[int]) -> float | None:
    d = paired_differences(runs, fraction, epochs, seeds)
    return float(np.std(d, ddof=1)) if len(d) >= 3 else None


def seed_sizes(result: dict, margin: float, primary: float) -> dict[float, tuple[int, float]]:
    """Per fraction with a chosen budget and at least three paired seeds there: the seeds its arms need and the
    paired spread that asks for them (`seeds_needed`: at least 5, power 0.8 to show equivalence within `margin`,
    and at the `primary` fraction an expected half-width of at most `margin`), None where more than 100."""
    sizes = {}
    for f, budget in result.get("chosen", {}).items():
        sd = paired_sd(result.get("runs", []), float(f), budget, result.get("seeds", [])) if budget else None
        if sd is not None:
            sizes[float(f)] = (seeds_needed(sd, margin, half_width=margin if abs(float(f) - primary) < 1e-9 else None),
                               sd)
    return sizes


def gain_text(gain: float, tol: float | None) -> str:
    """A doubling's gain to 4 digits, or 5 where 4 would hide which side of the tolerance it falls (+0.01004 is
    not under 0.01, though it prints +0.0100)."""
    return f"{gain:+.5f}" if tol is not None and abs(abs(gain) - tol) < 5e-5 else f"{gain:+.4f}"


def table(result: dict, margin: float = MARGIN, primary: float = PRIMARY) -> str:
    """The doubling table (Markdown): per fraction and budget, each init's mean validation macro-F1 over the seeds
    and its gain over the half budget; the chosen budget in bold; then the seeds each chosen share's paired spread
    asks for, sized for equivalence within `margin` (and the half-width at the `primary` share)."""
    runs, seeds, tol = result["runs"], result["seeds"], result.get("tol")
    inits = [i for i in ("scratch", "pretrained") if any(r["init"] == i for r in runs)]  # every invocation's
    paired = len(inits) == 2
    lines = ["| fraction | labelled | epochs | " + " | ".join(f"{i} val macro-F1 (gain)" for i in inits)
             + (" | pretrained - scratch per seed: mean ± sd" if paired else "") + " |",
             "|---|---|---|" + "---|" * (len(inits) + paired)]
    for f in sorted({r["fraction"] for r in runs}):
        chosen = result["chosen"].get(str(f))
        labelled = next(r["labelled"] for r in runs if r["fraction"] == f)
        for b in sorted({r["epochs"] for r in runs if r["fraction"] == f}):
            cells = []
            for i in inits:
                m, half = mean_f1(runs, f, i, b, seeds), mean_f1(runs, f, i, b // 2, seeds)
                cells.append("-" if m is None else f"{m:.4f}" + ("" if half is None else f" ({gain_text(m - half, tol)})"))
            if paired:
                cells.append(paired_gain(runs, f, b, seeds))
            epochs = f"**{b}**" if b == chosen else str(b)
            lines.append(f"| {f:g} | {labelled:,} | {epochs} | " + " | ".join(cells) + " |")
    fractions = sorted({r["fraction"] for r in runs})
    capped = result.get("capped", {})
    done = [f"{result['chosen'][str(f)]} epochs at {f:.0%}"
            + (" (capped: the rule chose nothing below it)" if str(f) in capped else "")
            for f in fractions if result["chosen"].get(str(f))]
    left = [f"{f:.0%} (ran to {max(r['epochs'] for r in runs if r['fraction'] == f)})" for f in fractions
            if not result["chosen"].get(str(f))]
    measure = "gain's 95 % upper bound" if result.get("rule") == "bound" else "mean gain"  # files before --rule: mean
    worth = f"; a doubling whose {measure} is under {tol:g} is worthless" if tol is not None else ""
    lines += ["", f"Mean over seeds {', '.join(map(str, seeds))} (gain: over the half budget{worth}). Chosen (bold): "
              + (", ".join(done) or "none yet") + (f"; still doubling: {', '.join(left)}" if left else "") + "."]
    needed = [f"{f:.0%} {'more than 100' if n is None else n} (sd {sd:.4f})"
              for f, (n, sd) in sorted(seed_sizes(result, margin, primary).items())] if paired else []
    if needed:
        lines[-1] += (f" Seeds the paired spread at the chosen budget asks for (at least 5; power 0.8 to show "
                      f"equivalence within ±{margin:g}, and at {primary * 100:g} % an expected half-width of at most "
                      f"{margin:g}): "
                      + ", ".join(needed) + ".")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=first_paragraph(__doc__))
    p.add_argument("--dataset", type=Path, default=Path("data/dataset"))
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1])
    p.add_argument("--start", type=int, nargs="+", default=[1], help="first budget per fraction (or one for all)")
    p.add_argument("--max", type=int, default=128, help="stop doubling here, unchosen")
    p.add_argument("--cap", type=int, help="the largest budget a share may take: where the rule chose nothing below "
                                           "it once every seed and init ran it, the share takes it, capped")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--init", nargs="+", choices=("scratch", "pretrained"), default=["scratch"])
    p.add_argument("--pretrained", type=Path, default=Path("models/pretrained"))
    p.add_argument("--tol", type=float,
                   help="a doubling worth less than this is not taken (default: protocol.yaml's budget_rule tol where "
                        "it names --out as its budget_source, else 0.01)")
    p.add_argument("--rule", choices=("bound", "two", "mean"), default="two",
                   help="bound: the doubling gain's 95 %% upper confidence bound below --tol; two: the mean gains "
                        "of the doublings into and out of the budget both below --tol; mean: the one's mean")
    p.add_argument("--out", type=Path, default=Path("metrics/budgets.json"))
    p.add_argument("--table", action="store_true", help="print the table of --out and stop")
    a = p.parse_args()
    terms = declared(a.out)
    a.tol = terms["tol"] if a.tol is None else a.tol
    if a.table:
        print(table(json.loads(a.out.read_text()), terms["margin"], terms["primary"]))
        return
    if len(a.seeds) < 3:
        raise UserError(f"--seeds: {len(a.seeds)} given; a budget is chosen over at least three seeds")
    starts = a.start * len(a.fractions) if len(a.start) == 1 else a.start
    if len(starts) != len(a.fractions):
        raise UserError(f"--start: give one budget, or one per fraction ({len(a.fractions)})")
    params = load_params()
    key = recipe_key(params)
    extractors = {s: extractor_digest(a.pretrained / f"seed{s}.pt") for s in a.seeds} if "pretrained" in a.init else {}
    old = json.loads(a.out.read_text()) if a.out.exists() else {"runs": []}
    kept = [r for r in old["runs"] + old.get("superseded", []) if r.get("recipe") == key]
    # a pretrained run counts only from the extractor it started from (another pretext design: another run)
    runs = [r for r in kept if r["init"] == "scratch" or (extractors and r.get("extractor") == extractors.get(r["seed"]))]
    chosen = old.get("chosen", {}) if old.get("recipe") == key else {}  # earlier invocations' other fractions
    capped = old.get("capped", {}) if old.get("recipe") == key else {}
    result = {"recipe": key, "profile": params.get("profile_name"), "seeds": a.seeds, "inits": a.init,
              "tol": a.tol, "rule": a.rule, "runs": runs, "chosen": chosen, "capped": capped,
              "superseded": [r for r in kept if r not in runs]}
    dataset, meta = load_dataset(a.dataset)
    here = cpu_id()
    for fraction, budget in zip(a.fractions, starts):
        limit = a.max if a.cap is None else min(a.max, a.cap)
        while choose(runs, fraction, a.init, a.seeds, a.tol, a.rule) is None and budget <= limit:
            for init in a.init:
                for seed in a.seeds:
                    if any((r["fraction"], r["init"], r["seed"], r["epochs"]) == (fraction, init, seed, budget)
                           and r.get("machine") == here for r in runs):
                        continue  # made on this kind of CPU (fp32 runs of one seed differ between kinds)
                    run = fine_tune(params, dataset, meta, fraction, seed, budget, init, a.pretrained)
                    origin = {"extractor": extractors[seed], "pretext": params["pretext"]["task"]} \
                        if init == "pretrained" else {}
                    runs.append({"fraction": fraction, "init": init, "seed": seed, "epochs": budget,
                                 "recipe": key, **origin, **run})
                    print(json.dumps(runs[-1]), flush=True)
                    result["runs"] = runs
                    a.out.parent.mkdir(parents=True, exist_ok=True)
                    a.out.write_text(json.dumps(result, indent=1))
            budget *= 2
        now = choose(runs, fraction, a.init, a.seeds, a.tol, a.rule)
        if now is not None and a.cap is not None and now > a.cap:
            now = None  # chosen above the cap (runs from an uncapped search): the cap decides below
        if now is None and a.cap is not None and ran_all(runs, fraction, a.init, a.seeds, a.cap):
            now, result["capped"][str(fraction)] = a.cap, a.cap  # nothing chosen below the cap: it holds the budget
        elif now is not None:
            result["capped"].pop(str(fraction), None)
        if now is not None or str(fraction) not in result["chosen"]:  # a choice stands until one is made
            result["chosen"][str(fraction)] = now                       # (pretrained runs at a chosen budget)
        print(f"fraction {fraction:g}: budget {result['chosen'][str(fraction)]} epochs"
              + (" (capped)" if str(fraction) in result["capped"] else ""), flush=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(table(result, terms["margin"], terms["primary"]))


def cli() -> None:
    """`python -m study <command>` (study/__main__.py): not a stage, so its one-line errors without the params
    check."""
    run_stage(main)
