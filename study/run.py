"""The whole study in one command: every arm of protocol.yaml as a DVC experiment, in an order that reuses the
pretrainings and scratch fine-tunes (DVC's run-cache), then the report.

    python -m study run          # run what is left, then `python -m study report`
    python -m study plan   # what is done, what is left, the estimate; runs nothing
    python -m study record # after it: one commit per arm on this branch, the primary's last, the report

Each arm is one `dvc exp run -n <pretext>-<fraction> -S profile=<profile> -S pretext=<pretext>
-S fraction=<fraction> -S seeds=[...]` in the workspace, printed before it runs: these are the per-experiment DVC
commands, and typing them by hand does the same. The primary endpoint's arm runs first, then the secondaries' in
the protocol's order, so an interrupted study has answered the most important questions.

Resumable: an arm is done when this commit has an experiment of it (as the protocol declares it) whose
metrics/compare.json is readable. Killed at any point and started again, it skips the done arms; in the
interrupted one DVC restores every finished stage from its run-cache and the interrupted training stage resumes
from its last finished epoch (selfsup/loop/resume.py). Before each arm it prints its progress and the time left,
estimated from this machine's finished arms (seconds a pretraining, a fine-tune epoch, an arm's other stages), or
from the protocol's `estimate` before any has finished. Each invocation's wall clock is added to
metrics/study_run.json, however it ends (an arm failed, Ctrl-C) but for a hard kill, so the study's time is on
record across interruptions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from study.protocol import PROTOCOL, Arm, Protocol, check_experiment, describe, load_protocol, power_table
from selfsup.core.files import save_json
from selfsup.core.params import UserError
from selfsup.core.stage import run_stage
from selfsup.loop.budget import finetune_epochs
from study.experiments import experiment_refs, read_compare, read_experiment
from study.markdown import minutes
from study.report_text import RUN_LOG
from study.results import REPLICATE

ARM_FILES = ["params.yaml", "dvc.lock", "metrics/summary.json", "plots/curves.png", "plots/pretext.png",
             "plots/examples.png", "plots/confusion.png"]  # what Git holds of one experiment (dvc.yaml: cache false)
REPORT_FILES = ["metrics/study.json", "metrics/study_run.json", "README.md", "docs/results.md",
                "plots/label_efficiency.png", "plots/fraction_curves.png"]


def ordered(protocol: Protocol) -> list[Arm]:
    """The arms in running order: the endpoints' (primary first, then the secondaries as declared), then the rest."""
    order = [protocol.arm(e.pretext, e.fraction) for e in protocol.endpoints]
    return list(dict.fromkeys([*order, *protocol.arms]))


def command(protocol: Protocol, arm: Arm) -> list[str]:
    return ["dvc", "exp", "run", "-n", arm.name, "-S", f"profile={protocol.profile}", "-S", f"pretext={arm.pretext}",
            "-S", f"fraction={float(arm.fraction)}", "-S", f"seeds=[{','.join(map(str, arm.seeds))}]"]


def done_arms(protocol: Protocol) -> dict[str, dict]:
    """The arms this commit's experiments have finished, by arm name (the newest experiment of each)."""
    try:
        refs = experiment_refs(None, None)
    except UserError:  # no experiments on this commit yet
        return {}
    newest: dict[str, dict] = {}
    for ref in refs:  # params first (Git only), compare.json only for the newest experiment of each arm
        if ref.endswith(REPLICATE):
            continue  # the primary's fp32 replicate answers no arm
        exp = read_experiment(ref, compare=False)
        try:
            arm = check_experiment(protocol, exp, finetune_epochs(exp["params"]))
        except (UserError, KeyError):
            continue  # another study's experiment: not an arm of this one
        if arm.name not in newest or exp["finished"] > newest[arm.name]["finished"]:
            newest[arm.name] = exp
    done: dict[str, dict] = {}
    for name, exp in newest.items():
        try:
            done[name] = exp | {"compare": read_compare(exp["ref"])}
        except UserError:
            continue  # a failed or unpulled experiment: the arm is not done
    return done


def rates(protocol: Protocol, done: dict[str, dict]) -> tuple[dict[str, float], str]:
    """Seconds a pretraining, a fine-tune epoch and an arm's other stages: measured on the finished arms, else the
    protocol's estimate."""
    pretrain, epochs, other = [], [], []
    for exp in done.values():
        c, budget = exp["compare"], finetune_epochs(exp["params"])
        runs = [r for init in ("scratch", "pretrained") for r in c["runs"][init]]
        pretrain.append(c["pretrain_wall_seconds"] / len(c["seeds"]))
        epochs += [r["wall_seconds"] / budget for r in runs]
        other.append(c["stage_wall_seconds"] - c["pretrain_wall_seconds"] - sum(r["wall_seconds"] for r in runs))
    if not done:
        return dict(protocol.estimate), "the protocol's estimate"
    return ({"pretrain_seconds": sum(pretrain) / len(pretrain), "finetune_epoch_seconds": sum(epochs) / len(epochs),
             "arm_other_seconds": sum(other) / len(other)}, f"measured on {len(done)} finished arm(s) here")


def remaining_seconds(protocol: Protocol, left: list[Arm], finished: list[Arm], rate: dict[str, float]) -> float:
    """Each piece of work once: a pretraining per (pretext, seed), a scratch fine-tune per (fraction, seed), a
    pretrained one per arm and seed, whatever finished arms have not already made."""
    pretrained = {(a.pretext, s) for a in finished for s in a.seeds}
    scratch = {(a.fraction, s) for a in finished for s in a.seeds}
    seconds = 0.0
    for arm in left:
        budget = protocol.budgets[arm.fraction]
        for s in arm.seeds:
            if (arm.pretext, s) not in pretrained:
                seconds += rate["pretrain_seconds"]
                pretrained.add((arm.pretext, s))
            if (arm.fraction, s) not in scratch:
                seconds += budget * rate["finetune_epoch_seconds"]
                scratch.add((arm.fraction, s))
            seconds += budget * rate["finetune_epoch_seconds"]
        seconds += rate["arm_other_seconds"]
    return seconds


def replicate(protocol: Protocol, done: dict[str, dict], skip: bool) -> list[str]:
    """The primary arm again in fp32, every stage re-run (`--force`: the precision is no stage's param, so DVC
    would restore the study's runs), after the study, where the study's fine-tunes ran in another precision."""
    primary = protocol.arm(protocol.primary.pretext, protocol.primary.fraction)
    exp = done[primary.name]
    precision = exp["compare"]["numerics"]["finetune"][0]["precision"]
    name = primary.name + REPLICATE
    if precision == "fp32":
        print("the study's fine-tunes ran in fp32: the primary is its own fp32 replicate", flush=True)
        return []
    if any(r.endswith("/" + name) for r in experiment_refs(None, None)):
        print(f"{name}: done", flush=True)
        return []
    if skip:
        print(f"{name}: skipped (--no-replicate); the report will say it has not run", flush=True)
        return []
    cmd = [*command(protocol, primary)[:4], name, *command(protocol, primary)[5:], "-S",
           "hardware.yaml:precision=fp32", "--force"]
    print(f"the primary again in fp32 (the study ran in {precision}):\n  {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"the fp32 replicate {name} failed; run `python -m study run` again: it resumes")
    return [name]


def git(*args: str) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def record(protocol: Protocol) -> None:
    """The finished study as commits on this branch, so a clone's `dvc exp show` lists it: one commit per arm (its
    params.yaml, dvc.lock, summary and figures, applied with `dvc exp apply`), the primary's last, so the branch's
    params.yaml, dvc.lock and `dvc metrics show` are the primary arm's; then the report of the study's commit and
    its documents in a last commit."""
    protocol.check_final()
    baseline = git("rev-parse", "HEAD")
    done = done_arms(protocol)
    arms = ordered(protocol)
    missing = [a.name for a in arms if a.name not in done]
    if missing:
        raise UserError(f"arms {', '.join(missing)} have not run: `python -m study run` first")
    if git("status", "--porcelain", "--untracked-files=no"):
        raise UserError("the working tree has uncommitted changes to tracked files: commit or stash them first")
    for arm in [*arms[1:], arms[0]]:
        exp = done[arm.name]["name"]
        if subprocess.run(["dvc", "exp", "apply", exp]).returncode != 0:
            raise UserError(f"`dvc exp apply {exp}` failed")
        git("add", "-f", *[f for f in ARM_FILES if Path(f).exists()])
        git("commit", "-q", "-m", f"study: arm {arm.name} (experiment {exp} of {baseline[:7]}, protocol sha1 "
                                  f"{protocol.digest[:12]})")
        print(f"recorded {arm.name} ({exp})", flush=True)
    report = subprocess.run([sys.executable, "-m", "study", "report", "--baseline", baseline,
                             "--protocol", str(protocol.path)])
    if report.returncode != 0:
        raise UserError("the report failed (its error is above)")
    git("add", "-f", *[f for f in REPORT_FILES if Path(f).exists()])
    git("commit", "-q", "-m", f"study: the report of {baseline[:7]}'s experiments under protocol sha1 "
                              f"{protocol.digest[:12]}")
    print(f"recorded the report; `git log --oneline -{len(arms) + 1}` lists the study", flush=True)


def log_session(started: float, seconds: float, arms: list[str]) -> float:
    """Add this invocation to metrics/study_run.json; the study's wall clock so far, over every invocation."""
    record = json.loads(RUN_LOG.read_text()) if RUN_LOG.exists() else {"sessions": []}
    record["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                               "seconds": round(seconds, 1), "arms_run": arms})
    record["wall_seconds"] = sum(s["seconds"] for s in record["sessions"])
    save_json(record, RUN_LOG)
    return record["wall_seconds"]


def run_arms(protocol: Protocol, plan: bool, ran: list[str]) -> None:
    """Each arm not done yet, in running order, with its progress and the time left; `plan` prints them instead.
    `ran` collects the arms this invocation finished."""
    arms = ordered(protocol)
    done = done_arms(protocol)
    if plan:
        rate, source = rates(protocol, done)
        eta = remaining_seconds(protocol, [a for a in arms if a.name not in done],
                                [a for a in arms if a.name in done], rate)
        for a in arms:
            print(f"  {'done' if a.name in done else 'left'}  {' '.join(command(protocol, a))}")
        print(f"study: {len(done)}/{len(arms)} arms done, about {minutes(eta)} left ({source}: "
              f"{rate['pretrain_seconds']:.0f} s a pretraining, {rate['finetune_epoch_seconds']:.1f} s a "
              f"fine-tune epoch, {rate['arm_other_seconds']:.0f} s an arm's other stages)")
        print(power_table(protocol))
        return
    for k, arm in enumerate(arms, 1):
        finished = [a for a in arms if a.name in done]
        left = [a for a in arms if a.name not in done]
        rate, source = rates(protocol, done)
        eta = remaining_seconds(protocol, left, finished, rate)
        if arm.name in done:
            print(f"[{k}/{len(arms)}] {arm.name}: done ({done[arm.name]['name']})", flush=True)
            continue
        print(f"[{k}/{len(arms)}] {arm.name}: {len(finished)} arms done, about {minutes(eta)} left ({source})\n"
              f"  {' '.join(command(protocol, arm))}", flush=True)
        proc = subprocess.run(command(protocol, arm))
        if proc.returncode != 0:
            raise UserError(f"arm {arm.name} failed (exit {proc.returncode}); fix the cause and run "
                            f"`python -m study run` again: it resumes")
        ran.append(arm.name)
        done = done_arms(protocol)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", type=Path, default=PROTOCOL)
    parser.add_argument("--plan", action="store_true", help="print what is done and left, with the estimate")
    parser.add_argument("--no-report", action="store_true", help="run the arms, not the report")
    parser.add_argument("--no-replicate", action="store_true", help="skip the primary's fp32 replicate")
    parser.add_argument("--record", action="store_true", help="commit the finished study: one commit per arm")
    args = parser.parse_args(argv)
    protocol = load_protocol(args.protocol)
    print(describe(protocol), flush=True)
    if args.record:
        record(protocol)
        return
    started = time.time()
    ran: list[str] = []
    if not args.plan:
        protocol.check_final()
    try:
        run_arms(protocol, args.plan, ran)
        if args.plan:
            return
        ran += replicate(protocol, done_arms(protocol), args.no_replicate)
    except BaseException:  # an arm failed, or Ctrl-C: this invocation's wall clock still counts
        if not args.plan:
            wall = log_session(started, time.time() - started, ran)
            print(f"study: stopped after {minutes(time.time() - started)} (the study's wall clock so far "
                  f"{minutes(wall)}, {RUN_LOG}); run it again to resume", file=sys.stderr, flush=True)
        raise
    wall = log_session(started, time.time() - started, ran)
    print(f"study: {len(ordered(protocol))} arms done; this run {minutes(time.time() - started)}, the study's "
          f"wall clock {minutes(wall)} over every invocation ({RUN_LOG})", flush=True)
    if not args.no_report:
        report = subprocess.run([sys.executable, "-m", "study", "report", "--protocol", str(args.protocol)])
        if report.returncode != 0:
            raise UserError("the report failed (its error is above); the arms are done: rerun it alone with "
                            "`python -m study report`")


def cli() -> None:
    """`python -m study <command>` (study/__main__.py): not a stage, so its one-line errors without the params
    check."""
    run_stage(main)
