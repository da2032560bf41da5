"""Reading the study's experiments, for every tool that tables them (study.report, study.tune, study.pretext_table):
DVC keeps each as a Git ref (refs/exps/...) whose commit holds that run's params.yaml and dvc.lock, and its
metrics/compare.json in DVC's cache. And the checks that experiments pooled in one table belong together: the
same params but those a table lets differ, and the same numerics (what a run records of its precision, device,
processes and libraries)."""

from __future__ import annotations

import json
import subprocess

import yaml

from selfsup.core.params import UserError

def dataset_name(data: dict) -> str:
    """What the `data` params read, in words: the source's name and, where declared, its digest's first digits
    (never where a machine read it from: that is no param)."""
    return data["source"] + (f" ({data['digest'][:15]})" if data.get("digest") else "")


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
    chosen = [r for r in refs if r.startswith(experiment_ref(sha, ""))]
    if not chosen:
        raise UserError(f"no experiments on baseline {sha[:7]}: queue them first (README, 'Label efficiency'), "
                        f"or pass --baseline REV / --exp NAME ...")
    return chosen


def experiment_ref(baseline: str, name: str) -> str:
    """The full Git ref of experiment `name` made on commit `baseline` (DVC's refs/exps/ab/cdef.../<name>). DVC
    takes a bare name only while one baseline holds it: a study renewed re-runs its arms under the same names."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def read_experiment(ref: str, compare: bool = True) -> dict:
    """An experiment's params (in its Git commit) and metrics/compare.json (a DVC output: its commit's
    dvc.lock names it, DVC's cache holds it; `dvc exp pull` fetches both). `compare=False` reads the params
    alone (Git only: fast), for a caller that first picks which experiments it needs."""
    name = ref.rsplit("/", 1)[1]
    exp = {
        "name": name,
        "baseline": ref.split("/")[2] + ref.split("/")[3],
        "finished": int(git("log", "-1", "--format=%ct", ref).strip()),
        "params": yaml.safe_load(git("show", f"{ref}:params.yaml")),
        "ref": ref,
    }
    return exp | {"compare": read_compare(ref)} if compare else exp


def read_output(ref: str, path: str) -> str:
    """A DVC-cached output of an experiment (its commit's dvc.lock names it, DVC's cache holds it)."""
    import dvc.api  # imported here: only reading experiments needs it
    name = ref.rsplit("/", 1)[1]
    try:
        return dvc.api.read(path, repo=".", rev=ref)
    except Exception as e:  # DVC raises several types: not in the commit, not in the cache
        raise UserError(f"experiment {name} has no readable {path} ({type(e).__name__}): did it fail? Was it "
                        f"pulled with `dvc exp pull`?") from e


def read_compare(ref: str) -> dict:
    return json.loads(read_output(ref, "metrics/compare.json"))


# what a run's numbers come from; conf/ (params.yaml's sources) is not here: every experiment's params are
# compared themselves (check_same_study), and the profile's budgets change as the budget search chooses them
CODE = ("stages", "selfsup", "nets", "dvc.yaml", "requirements.txt")


def check_same_code(experiments: list[dict]) -> None:
    """Experiments made at different commits pool only where those commits hold the same code (the study's
    record adds commits between arms, each holding records alone); one line names the first file that differs."""
    first = experiments[0]
    for exp in experiments[1:]:
        if exp["baseline"] != first["baseline"]:
            changed = git("diff", "--name-only", first["baseline"], exp["baseline"], "--", *CODE).split()
            if changed:
                raise UserError(f"experiments {first['name']} ({first['baseline'][:7]}) and {exp['name']} "
                                f"({exp['baseline'][:7]}) ran different code ({changed[0]}"
                                f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}): run the arms "
                                f"of one study at one code")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_same_study(experiments: list[dict], free: set[str] | tuple[str, ...], why: str) -> None:
    """Every experiment must share every param but those in `free`: a top-level key (`fraction`) or a dotted
    prefix (`pretext.task`) frees it and everything under it."""
    def freed(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in free)
    base = flatten(experiments[0]["params"])
    for exp in experiments[1:]:
        other = flatten(exp["params"])
        differ = sorted(k for k in base.keys() | other.keys() if not freed(k) and base.get(k) != other.get(k))
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
