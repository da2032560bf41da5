"""The whole study in one command: every arm of protocol.yaml as a DVC experiment, in an order that reuses the
pretrainings and scratch fine-tunes (DVC's run-cache), each finished arm recorded in Git, then the report.

    python -m study run                          # run what the record lacks, then `python -m study report`
    python -m study run --arms context-0.01 ...  # only these arms (two machines can share one study)
    python -m study plan                         # what is recorded, what is left, the estimate; runs nothing
    python -m study record                       # the primary arm's params.yaml, dvc.lock and figures, the report
    python -m study record --partial             # the same once the primary is recorded, the others not yet

Each arm is one `dvc exp run -n <arm> -S profile=<profile> -S pretext=<pretext> -S fraction=<fraction>
-S seeds=[...]` in the workspace (with the protocol's numerics as hardware.yaml overrides, a budget other than
the fraction's where the arm declares one, and only the `linear_probe` stages for a probe-only arm), printed
before it runs: these are the per-experiment DVC commands, and typing them by hand does the same. The primary
endpoint's arm runs first, then the secondaries' in the protocol's order, then the described arms, so an
interrupted study has answered the most important questions.

The record: when an arm's experiment finishes, its figures (metrics/compare.json, or each seed's probe) go into
`metrics/arms/<arm>.json` with the commit its code ran at, the protocol's sha1 and the machine (study/records.py),
and that file is committed at once (`--no-commit` leaves it uncommitted). An arm estimated longer than
`--part-minutes` (60) runs in parts, each a DVC experiment over a few of its seeds without the arm's comparison,
each seed's logs committed as its part ends, and the arm assembled once all its seeds are (study/parts.py): an
ended session, or a machine given back, loses one part at most. An arm is done when the working tree
has its record under this protocol, wherever it ran: `run` on a new machine (a fresh clone, no DVC cache, no
experiment refs) runs only what the record lacks, and two machines that each took some arms (`--arms`) merge
their commits. Stopped with Ctrl-C it lets the running `dvc exp run` clean up (HEAD back on the branch; it
refuses to start on a detached HEAD). Killed at any point and started again, it skips the recorded arms; in the
interrupted one DVC restores every finished stage from its run-cache (on the same machine) and the interrupted
training stage resumes from its last finished epoch (selfsup/loop/resume.py). Before each arm it prints its
progress and the time left, estimated from the recorded arms (seconds a pretraining, a fine-tune epoch, an arm's
other stages), or from the protocol's `estimate` before any has finished. Each invocation's wall clock is added to
metrics/study_run.json, however it ends (an arm failed, Ctrl-C) but for a hard kill, and committed (that file
alone, unless --no-commit), so the tracked tree is clean for `record` once the workspace is checked out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from study.protocol import (PROTOCOL, Arm, Protocol, arm_estimates, check_experiment, describe, load_protocol,
                            ordered, power_table, remaining_seconds)
from selfsup.core.files import save_json
from selfsup.core.params import UserError
from selfsup.core.stage import run_stage
from selfsup.loop.budget import finetune_epochs
from study.experiments import (check_same_code, check_same_study, experiment_ref, experiment_refs, git, read_compare,
                               read_experiment, read_output)
from study.markdown import first_paragraph, minutes
from study.parts import assemble, experiments_of, part_path, read_parts, write_parts
from study.records import RECORDS, machine, machine_label, read_records, record_path, write_record
from study.report_text import RUN_LOG

ARM_FILES = ["params.yaml", "dvc.lock", "metrics/summary.json", "plots/curves.png", "plots/pretext.png",
             "plots/examples.png", "plots/confusion.png"]  # what Git holds of one experiment (dvc.yaml: cache false)
PART_TARGETS = ["finetune_scratch", "finetune_pretrained", "linear_probe"]  # a part's stages: all but compare
PART_MINUTES = 60  # `run --part-minutes`: an arm estimated longer runs in parts of about this long
REPORT_FILES = ["metrics/study.json", "metrics/study_run.json", "README.md", "docs/results.md",
                "plots/label_efficiency.png", "plots/fraction_curves.png"]


def part_name(arm: Arm, seeds: list[int] | tuple[int, ...]) -> str:
    """The experiment of a part of an arm (study/parts.py): `context-0.01-s0-2` runs seeds 0 to 2 of it."""
    return f"{arm.name}-s{seeds[0]}" + (f"-{seeds[-1]}" if len(seeds) > 1 else "")


def command(protocol: Protocol, arm: Arm, part: list[int] | None = None) -> list[str]:
    """The arm's `dvc exp run`; with `part` (some of its seeds), that part's: those seeds' runs (their splits,
    pretrainings, fine-tunes and probes), named after them, without the arm's comparison (study/parts.py)."""
    seeds = arm.seeds if part is None else part
    cmd = ["dvc", "exp", "run", "-n", arm.name if part is None else part_name(arm, part), "-S",
           f"profile={protocol.profile}", "-S", f"pretext={arm.pretext}", "-S", f"fraction={float(arm.fraction)}",
           "-S", f"seeds=[{','.join(map(str, seeds))}]"]
    for knob, value in protocol.numerics.items():  # the pinned numerics: hardware knobs, no stage's params
        cmd += ["-S", f"hardware.yaml:{knob}={str(value).lower()}"]
    if not arm.probe_only and (arm.budget_factor != 1 or arm.fraction in protocol.chosen):  # not the profile's
        cmd += ["-S", f"finetune.epochs_by_fraction=[[{float(arm.fraction)},{protocol.budget(arm)}]]"]
    return cmd + (["linear_probe"] if arm.probe_only else PART_TARGETS if part is not None else [])


def done_arms(protocol: Protocol) -> dict[str, dict]:
    """The arms the working tree's record holds under this protocol, by arm name."""
    records = read_records()
    made_under(protocol, {record_path(name): r for name, r in records.items()})
    return {name: r for name, r in records.items() if name in {a.name for a in protocol.arms}}


def made_under(protocol: Protocol, records: dict) -> None:
    """Refuse, naming the first, any record (by its path) made under a protocol other than `protocol`."""
    for path, record in records.items():
        if record["protocol_sha1"] != protocol.digest:
            raise UserError(f"{path} was made under protocol sha1 {record['protocol_sha1'][:12]}, not "
                            f"{protocol.path}'s ({protocol.digest[:12]}): a new protocol is a new study; move the old "
                            f"records away (git rm -r {RECORDS})")


def rates(protocol: Protocol, done: dict[str, dict]) -> tuple[dict[str, float], str]:
    """Seconds a pretraining, a fine-tune epoch and an arm's other stages: measured on the recorded fine-tuned
    arms, else the protocol's estimate."""
    pretrain, epochs, other = [], [], []
    measured = [r for r in done.values() if r.get("compare")]
    for record in measured:
        c, budget = record["compare"], finetune_epochs(record["params"])
        runs = [r for init in ("scratch", "pretrained") for r in c["runs"][init]]
        pretrain.append(c["pretrain_wall_seconds"] / len(c["seeds"]))
        epochs += [r["wall_seconds"] / budget for r in runs]
        other.append(c["stage_wall_seconds"] - c["pretrain_wall_seconds"] - sum(r["wall_seconds"] for r in runs))
    if not measured:
        return dict(protocol.estimate), "the protocol's estimate"
    return ({"pretrain_seconds": sum(pretrain) / len(pretrain), "finetune_epoch_seconds": sum(epochs) / len(epochs),
             "arm_other_seconds": sum(other) / len(other)}, f"measured on {len(measured)} recorded arm(s)")


def plan_table(protocol: Protocol, rate: dict[str, float]) -> str:
    """Markdown: each arm in running order with what it adds to the study when the arms before it have run (its
    pretrainings not made yet, its scratch runs not shared yet, its own fine-tunes), at `rate`, and the total."""
    lines = ["| arm | seeds | budget (epochs) | new pretrainings | new scratch fine-tunes | fine-tunes | estimate |",
             "|---|---|---|---|---|---|---|"]
    before: list[Arm] = []
    estimates = arm_estimates(protocol, rate)
    for arm in ordered(protocol):
        seconds = estimates[arm.name]
        made = {(a.pretext, s) for a in before for s in a.seeds}
        shared = {(a.fraction, protocol.planned_budget(a), s) for a in before if not a.probe_only for s in a.seeds}
        pretrain = sum((arm.pretext, s) not in made for s in arm.seeds)
        scratch = 0 if arm.probe_only else sum((arm.fraction, protocol.planned_budget(arm), s) not in shared
                                               for s in arm.seeds)
        own = 0 if arm.probe_only else len(arm.seeds)
        budget = "probe only" if arm.probe_only else str(protocol.planned_budget(arm)) + (
            " (not chosen yet: assumed)" if protocol.budgets[arm.fraction] is None else "")
        seeds = f"{len(arm.seeds)}" + (" (not chosen yet: assumed)" if arm.seeds_open else "")
        lines.append(f"| {arm.name} | {seeds} | {budget} | {pretrain} | {scratch} | {own} | "
                     f"{minutes(seconds)} |")
        before.append(arm)
    lines.append(f"| all | | | | | | {minutes(sum(estimates.values()))} |")
    return "\n".join(lines)


def newest_experiment(name: str) -> dict:
    """The newest experiment of that name on this commit (the one `dvc exp run -n <name>` just made)."""
    refs = [r for r in experiment_refs(None, None) if r.rsplit("/", 1)[1] == name]
    if not refs:
        raise UserError(f"experiment {name} finished but none of that name is on this commit")
    return max((read_experiment(r, compare=False) for r in refs), key=lambda e: e["finished"])


def commit_record(files: list[Path], message: str, what: str, commit: bool) -> None:
    """Commit the record files just written (those alone), unless told not; say so either way."""
    if commit:
        names = [f.as_posix() for f in files]
        git("add", "-f", *names)
        git("commit", "-q", "-m", message, "--", *names)
        print(f"recorded {what}, committed {git('rev-parse', '--short', 'HEAD').strip()}", flush=True)
    else:
        print(f"recorded {what} (not committed: --no-commit)", flush=True)


def record_arm(protocol: Protocol, arm: Arm, commit: bool, wall_seconds: float) -> Path:
    """The finished arm's record (study/records.py), checked against the protocol, with the wall clock its
    `dvc exp run` took here; committed unless told not."""
    exp = newest_experiment(arm.name)
    if arm.probe_only:
        exp["probes"] = {str(s): json.loads(read_output(exp["ref"], f"metrics/runs/linear_probe/seed{s}.json"))
                         for s in arm.seeds}
    else:
        exp["compare"] = read_compare(exp["ref"])
    if check_experiment(protocol, exp, finetune_epochs(exp["params"])) != arm:
        raise UserError(f"experiment {exp['name']} does not run arm {arm.name} as {protocol.path} declares it")
    record = {"arm": arm.name, "experiment": exp["name"], "baseline": exp["baseline"], "finished": exp["finished"],
              "protocol_sha1": protocol.digest, "machine": machine(), "wall_seconds": round(wall_seconds, 1),
              "params": exp["params"]}
    path = write_record(record | ({"probes": exp["probes"]} if arm.probe_only else {"compare": exp["compare"]}))
    commit_record([path], f"study record: arm {arm.name} (experiment {exp['name']} of {exp['baseline'][:7]}, "
                          f"protocol sha1 {protocol.digest[:12]})", f"{arm.name}: {path}", commit)
    return path


def done_parts(protocol: Protocol, arm: Arm) -> dict[int, dict]:
    """The seeds of `arm` the record holds in parts (study/parts.py) under this protocol."""
    parts = read_parts(arm.name)
    made_under(protocol, {part_path(arm.name, seed): part for seed, part in parts.items()})
    return {s: p for s, p in parts.items() if s in arm.seeds}


def as_arm(protocol: Protocol, arm: Arm, exp: dict) -> dict:
    """`exp` (a part's experiment, or the parts assembled) with the arm's seeds, checked to run `arm` as the
    protocol declares it."""
    whole = exp | {"params": exp["params"] | {"seeds": list(arm.seeds)}}
    if check_experiment(protocol, whole, finetune_epochs(whole["params"])) != arm:
        raise UserError(f"experiment {exp['name']} does not run arm {arm.name} as {protocol.path} declares it")
    return whole


def record_part(protocol: Protocol, arm: Arm, seeds: list[int], commit: bool, wall_seconds: float) -> None:
    """The part that just ran `seeds` of `arm` in the workspace: a part file per seed, committed unless told not."""
    exp = newest_experiment(part_name(arm, seeds))
    if list(exp["params"]["seeds"]) != list(seeds):
        raise UserError(f"experiment {exp['name']} ran seeds {exp['params']['seeds']}, not {seeds}")
    as_arm(protocol, arm, exp)
    files = write_parts(arm.name, seeds, exp, protocol.digest, machine(), wall_seconds)
    commit_record(files, f"study record: arm {arm.name}, seeds {', '.join(map(str, seeds))} (experiment {exp['name']} "
                         f"of {exp['baseline'][:7]}, protocol sha1 {protocol.digest[:12]})",
                  f"{arm.name} seeds {', '.join(map(str, seeds))}: {files[0].parent}", commit)


def record_assembled(protocol: Protocol, arm: Arm, commit: bool) -> Path:
    """The arm whose every seed has its part: its comparison made over the recorded logs (study/parts.py), its
    record written as a whole arm's, with the parts' experiments, machines and summed wall clock."""
    parts = done_parts(protocol, arm)
    if missing := [s for s in arm.seeds if s not in parts]:
        raise UserError(f"arm {arm.name} lacks the parts of seeds {missing}: `python -m study run` runs them")
    experiments = experiments_of(list(parts.values()))
    check_same_code([{"name": e["experiment"], "baseline": e["baseline"]} for e in experiments])
    check_same_study([{"name": p["experiment"], "params": p["params"]} for p in parts.values()], {"seeds"},
                     f"the parts of arm {arm.name} must share every param but their seeds")
    first = parts[arm.seeds[0]]
    compare = assemble(parts, list(arm.seeds))
    exp = as_arm(protocol, arm, {"name": arm.name, "params": first["params"], "compare": compare})
    machines = list({json.dumps(e["machine"], sort_keys=True): e["machine"] for e in experiments}.values())
    record = {"arm": arm.name, "experiment": " + ".join(e["experiment"] for e in experiments),
              "baseline": experiments[0]["baseline"], "finished": max(e["finished"] for e in experiments),
              "protocol_sha1": protocol.digest, "machine": machines[0] if len(machines) == 1 else machines,
              "wall_seconds": round(sum(e["wall_seconds"] for e in experiments), 1), "params": exp["params"],
              "parts": experiments, "compare": compare}
    path = write_record(record)
    commit_record([path], f"study record: arm {arm.name}, assembled from {len(experiments)} parts (protocol sha1 "
                          f"{protocol.digest[:12]})", f"{arm.name}: {path}", commit)
    return path


def commit_staged(message: str) -> None:
    """Commit what is staged, if anything is (record run again with nothing new must not fail on an empty commit)."""
    if git("diff", "--cached", "--name-only").strip():
        git("commit", "-q", "-m", message)


def committed_as_recorded(subject: str) -> bool:
    """Whether a commit of this branch has `subject` (the primary arm's files, as `record` commits them) and those
    files are unchanged since: then there is nothing to apply again, and no need of the primary's experiment, which
    only the machine that ran it holds."""
    commit = git("log", "-1", "--format=%H", "--fixed-strings", f"--grep={subject}").strip()
    return bool(commit) and not git("diff", "--name-only", commit, "HEAD", "--", *ARM_FILES).strip()


def record(protocol: Protocol, partial: bool = False) -> None:
    """The finished study's last commit: the primary arm's params.yaml, dvc.lock, summary and figures (applied with
    `dvc exp apply`: run it on the machine whose experiments hold the primary; once committed and unchanged, not
    applied again, so a later record runs on any machine), so the branch's params.yaml,
    dvc.lock and `dvc metrics show` are the primary arm's; then the report and its documents. `partial`: once the
    primary arm is recorded, the same with the report of the arms recorded so far (a study that spans sessions)."""
    protocol.check_final()
    done = done_arms(protocol)
    primary = protocol.arm(protocol.primary.pretext, protocol.primary.fraction)
    missing = [a.name for a in ordered(protocol) if a.name not in done]
    if primary.name not in done or (missing and not partial):
        raise UserError(f"arms {', '.join(missing)} have no record: `python -m study run` first"
                        + ("" if primary.name not in done
                           else " (or `python -m study record --partial`: the arms recorded so far)"))
    made = done[primary.name]
    if "parts" in made:
        raise UserError(f"the primary arm {primary.name} ran in parts: no one experiment holds its params.yaml, "
                        f"dvc.lock and figures; run it whole (`python -m study run --arms {primary.name} "
                        f"--part-minutes` above its estimate, after `git rm -r {record_path(primary.name)}`)")
    if git("status", "--porcelain", "--untracked-files=no"):
        raise UserError("the working tree has uncommitted changes to tracked files: commit or stash them first")
    subject = (f"study: the primary arm {primary.name}'s params, lock and figures (experiment {made['experiment']} "
               f"of {made['baseline'][:7]}, protocol sha1 {protocol.digest[:12]})")
    if committed_as_recorded(subject):  # a later record: on a machine without the primary's experiment too
        print(f"the primary arm {primary.name}'s files: committed as recorded, unchanged since", flush=True)
    else:
        exp = experiment_ref(made["baseline"], made["experiment"])
        if subprocess.run(["dvc", "exp", "apply", exp]).returncode != 0:
            raise UserError(f"`dvc exp apply {exp}` failed: run `python -m study record` where the primary arm ran")
        git("add", "-f", *[f for f in ARM_FILES if Path(f).exists()])
        git("add", "-u", "--", "*.gitignore")  # the outputs' ignore lists DVC keeps (one line a seed's checkpoint)
        commit_staged(subject)  # nothing staged where these files were already the primary's
        git("checkout", "--", ".")  # the rest of the experiment's tree (its code, its hardware.yaml) back to this commit's
    report = subprocess.run([sys.executable, "-m", "study", "report", "--protocol", str(protocol.path),
                             *(["--partial"] if missing else [])])
    if report.returncode != 0:
        raise UserError("the report failed (its error is above)")
    git("add", "-f", *[f for f in REPORT_FILES if Path(f).exists()])
    commit_staged(f"study: the report of {len(done)} recorded arms under protocol sha1 {protocol.digest[:12]}"
                  + (f" ({len(missing)} not yet run)" if missing else ""))
    print("recorded the primary arm and the report", flush=True)


def log_session(started: float, seconds: float, arms: list[str], commit: bool) -> float:
    """Add this invocation to metrics/study_run.json, committed (that file alone) unless told not, so the tree is
    clean for `record`; the study's wall clock so far, over every invocation."""
    record = json.loads(RUN_LOG.read_text()) if RUN_LOG.exists() else {"sessions": []}
    record["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                               "seconds": round(seconds, 1), "arms_run": arms})
    record["wall_seconds"] = sum(s["seconds"] for s in record["sessions"])
    save_json(record, RUN_LOG)
    if commit:
        try:
            git("add", "-f", RUN_LOG.as_posix())
            git("commit", "-q", "-m", f"study run log: {minutes(seconds)} running "
                                      f"{', '.join(arms) or 'no arm to its end'}", "--", RUN_LOG.as_posix())
        except UserError as e:  # the log is written and the arms recorded: say so, and let the run's own end stand
            print(f"study: {RUN_LOG} written, not committed ({e}): commit it before `record`", file=sys.stderr,
                  flush=True)
    return record["wall_seconds"]


def chosen_arms(protocol: Protocol, names: list[str] | None) -> list[Arm]:
    """The arms in running order, or those named (`--arms`), in running order; an unknown name is refused."""
    arms = ordered(protocol)
    if names:
        unknown = sorted(set(names) - {a.name for a in arms})
        if unknown:
            raise UserError(f"--arms {' '.join(unknown)}: no such arm in {protocol.path} (its arms: "
                            f"{', '.join(a.name for a in arms)})")
        arms = [a for a in arms if a.name in names]
    return arms


def head_branch() -> str | None:
    """The branch HEAD is on; None when HEAD is detached (`git symbolic-ref` fails, which `git` would raise on)."""
    proc = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def current_branch() -> str:
    """The branch HEAD is on, where each arm's record is committed. A detached HEAD (a `dvc exp run` stopped
    before its cleanup leaves one) is refused: records committed there would be on no branch."""
    if (branch := head_branch()) is None:
        head = git("rev-parse", "--short", "HEAD").strip()
        raise UserError(f"HEAD is detached at {head} (a `dvc exp run` stopped before its cleanup leaves it so): "
                        f"`git checkout main` first (after `git branch -f main {head}` if {head} holds commits "
                        "main lacks)")
    return branch


def reattach(branch: str) -> None:
    """HEAD back on `branch` if a `dvc exp run` stopped hard left it detached at that branch's commit."""
    if head_branch() is None and git("rev-parse", "HEAD") == git("rev-parse", f"refs/heads/{branch}"):
        git("symbolic-ref", "HEAD", f"refs/heads/{branch}")


def run_child(cmd: list[str], grace_seconds: float = 120) -> int:
    """Run `cmd` and return its exit code. On Ctrl-C, which the child in this process group gets too, wait up to
    `grace_seconds` for it to finish its own cleanup (DVC restores HEAD and its stage locks) instead of killing it
    a quarter of a second later as `subprocess.run` does; then Ctrl-C goes on."""
    child = subprocess.Popen(cmd)
    try:
        return child.wait()
    except KeyboardInterrupt:
        try:
            child.wait(timeout=grace_seconds)
        except BaseException:  # it would not stop, or a second Ctrl-C
            child.kill()
            child.wait()
        raise


def seeds_per_part(protocol: Protocol, arm: Arm, rate: dict[str, float], minutes: float) -> int:
    """How many of the arm's seeds a part of about `minutes` runs: at least one; all of them (the arm whole) where
    they fit, and always for a probe-only arm."""
    if arm.probe_only:
        return len(arm.seeds)
    seed = rate["pretrain_seconds"] + 2 * protocol.budget(arm) * rate["finetune_epoch_seconds"]
    return max(1, int(minutes * 60 // seed))


def run_experiment(cmd: list[str], what: str, branch: str | None) -> float:
    """Run one `dvc exp run` (an arm's or a part's), HEAD put back on `branch` however it ends; its wall clock, or
    a one-line error where it failed."""
    began = time.time()
    try:
        code = run_child(cmd)
    finally:
        if branch:
            reattach(branch)
    if code != 0:
        raise UserError(f"{what} failed (exit {code}); fix the cause and run `python -m study run` again: it resumes")
    return time.time() - began


def run_parts(protocol: Protocol, arm: Arm, size: int, commit: bool, branch: str | None) -> None:
    """The seeds of `arm` the record lacks, `size` a part, each part recorded as it ends; then the arm assembled."""
    left = [s for s in arm.seeds if s not in done_parts(protocol, arm)]
    while left:
        part = left[:size]
        print(f"  part {part_name(arm, part)}: {len(arm.seeds) - len(left)}/{len(arm.seeds)} seeds recorded\n  "
              f"{' '.join(command(protocol, arm, part))}", flush=True)
        record_part(protocol, arm, part, commit,
                    run_experiment(command(protocol, arm, part), f"part {part_name(arm, part)}", branch))
        left = left[size:]
    record_assembled(protocol, arm, commit)


def left_of(protocol: Protocol, arm: Arm) -> Arm:
    """The arm with only the seeds its parts have not recorded (what is left of it to run)."""
    parts = done_parts(protocol, arm)
    return replace(arm, seeds=tuple(s for s in arm.seeds if s not in parts)) if parts else arm


def run_arms(protocol: Protocol, arms: list[Arm], plan: bool, commit: bool, ran: list[str],
             branch: str | None = None, part_minutes: float = PART_MINUTES) -> None:
    """Each of `arms` the record lacks, in running order, with its progress and the time left; `plan` prints
    them instead. An arm estimated to take longer than `part_minutes` runs in parts (study/parts.py). `ran`
    collects the arms this invocation finished and recorded; `branch`, where HEAD is put back should an arm's
    `dvc exp run` be stopped before it can do so itself."""
    done = done_arms(protocol)
    rate, source = rates(protocol, done)
    if plan:
        left = [left_of(protocol, a) for a in arms if a.name not in done]
        eta = remaining_seconds(protocol, left, [a for a in protocol.arms if a.name in done], rate)
        for a in arms:
            parts = {} if a.name in done else done_parts(protocol, a)
            where = (f"done on {machine_label(done[a.name]['machine'])}" if a.name in done else
                     f"left ({len(parts)}/{len(a.seeds)} seeds recorded in parts)" if parts else "left")
            why = protocol.ready(a)
            size = seeds_per_part(protocol, a, rate, part_minutes) if not why else len(a.seeds)
            how = f" (in parts of {size} seeds)" if size < len(a.seeds) and a.name not in done else ""
            print(f"  {where}  {a.name}: {why}" if why else f"  {where}  {' '.join(command(protocol, a))}{how}")
        print(f"study: {sum(a.name in done for a in arms)}/{len(arms)} arms recorded, about {minutes(eta)} left "
              f"({source}: {rate['pretrain_seconds']:.0f} s a pretraining, {rate['finetune_epoch_seconds']:.1f} s a "
              f"fine-tune epoch, {rate['arm_other_seconds']:.0f} s an arm's other stages)")
        print(power_table(protocol))
        print(f"\nThe plan, arm by arm in running order ({source}):\n")
        print(plan_table(protocol, rate))
        return
    for k, arm in enumerate(arms, 1):
        if arm.name in done:
            print(f"[{k}/{len(arms)}] {arm.name}: recorded ({record_path(arm.name)})", flush=True)
            continue
        if why := protocol.ready(arm):
            print(f"[{k}/{len(arms)}] {arm.name}: left, {why}: `python -m study budgets` first", flush=True)
            continue
        finished = [a for a in protocol.arms if a.name in done]
        left = [left_of(protocol, a) for a in arms if a.name not in done]
        eta = remaining_seconds(protocol, left, finished, rate)
        size = seeds_per_part(protocol, arm, rate, part_minutes)
        print(f"[{k}/{len(arms)}] {arm.name}: {len(finished)} arms recorded, about {minutes(eta)} left for these "
              f"({source})" + (f"; in parts of {size} seeds" if size < len(arm.seeds) else ""), flush=True)
        if size < len(arm.seeds) or done_parts(protocol, arm):
            run_parts(protocol, arm, size, commit, branch)
        else:
            print(f"  {' '.join(command(protocol, arm))}", flush=True)
            record_arm(protocol, arm, commit, run_experiment(command(protocol, arm), f"arm {arm.name}", branch))
        ran.append(arm.name)
        done = done_arms(protocol)
        rate, source = rates(protocol, done)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--protocol", type=Path, default=PROTOCOL)
    parser.add_argument("--arms", nargs="+", metavar="ARM", help="only these arms (names as `plan` lists them)")
    parser.add_argument("--plan", action="store_true", help="print what is recorded and left, with the estimate")
    parser.add_argument("--no-report", action="store_true", help="run the arms, not the report")
    parser.add_argument("--part-minutes", type=float, default=PART_MINUTES, metavar="M",
                        help=f"run an arm estimated longer than M minutes in parts of about M, each recorded as it "
                             f"ends (default {PART_MINUTES})")
    parser.add_argument("--partial", action="store_true",
                        help="with --record: once the primary arm is recorded, the report of the arms recorded so far")
    parser.add_argument("--no-commit", action="store_true", help="write each arm's record, do not commit it")
    parser.add_argument("--record", action="store_true",
                        help="commit the primary arm's params, lock and figures, then the report")
    args = parser.parse_args(argv)
    protocol = load_protocol(args.protocol)
    print(describe(protocol), flush=True)
    if args.record:
        current_branch()
        record(protocol, args.partial)
        return
    arms = chosen_arms(protocol, args.arms)
    started = time.time()
    ran: list[str] = []
    if args.plan:  # prints, runs and writes nothing
        run_arms(protocol, arms, True, False, ran, part_minutes=args.part_minutes)
        return
    protocol.check_final()
    branch = current_branch()
    try:
        run_arms(protocol, arms, False, not args.no_commit, ran, branch, args.part_minutes)
    except BaseException:  # an arm failed, or Ctrl-C: this invocation's wall clock still counts
        wall = log_session(started, time.time() - started, ran, not args.no_commit)
        print(f"study: stopped after {minutes(time.time() - started)} (the study's wall clock so far "
              f"{minutes(wall)}, {RUN_LOG}); run it again to resume", file=sys.stderr, flush=True)
        raise
    wall = log_session(started, time.time() - started, ran, not args.no_commit)
    print(f"study: {len(arms)} arms recorded; this run {minutes(time.time() - started)}, the study's "
          f"wall clock {minutes(wall)} over every invocation here ({RUN_LOG})", flush=True)
    if not args.no_report:
        partial = ["--partial"] if len(done_arms(protocol)) < len(protocol.arms) else []
        report = subprocess.run([sys.executable, "-m", "study", "report", "--protocol", str(args.protocol),
                                 *partial])
        if report.returncode != 0:
            raise UserError("the report failed (its error is above); the arms are recorded: rerun it alone with "
                            "`python -m study report`")


def cli() -> None:
    """`python -m study <command>` (study/__main__.py): not a stage, so its one-line errors without the params
    check."""
    run_stage(main)
