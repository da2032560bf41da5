"""The study's protocol (protocol.yaml): what it asks, which runs answer it, and how they are judged, declared
before the final runs and committed before their results. The report (study/report.py) reads it, checks every
experiment against it (one line naming the first difference) and tests exactly the endpoints it lists: the
primary alone, the secondaries Holm-corrected as their own short family, each with the equivalence test against
the declared margin and the power the protocol's seeds give. docs/protocol.md says why each choice is what it is.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from selfsup.analysis.stats import power_equivalence, power_paired
from selfsup.core.params import PRECISIONS, UserError

PROTOCOL = Path("protocol.yaml")


@dataclass(frozen=True)
class Cell:
    """A pretext fine-tuned from at one label fraction."""

    pretext: str
    fraction: float

    @property
    def name(self) -> str:  # the arm's experiment name
        return f"{self.pretext}-{self.fraction:g}"

    @property
    def label(self) -> str:  # the words the documents use
        return f"{self.pretext} at {self.fraction:.0%}"


@dataclass(frozen=True)
class Arm(Cell):
    """One experiment of the study: the cell, over these seeds; fine-tuned for `budget_factor` times the
    fraction's budget (a described look beyond the chosen budget), or, `probe_only`, its pretraining probed and
    not fine-tuned."""

    seeds: tuple[int, ...]
    budget_factor: int = 1
    probe_only: bool = False
    seeds_open: bool = field(default=False, compare=False)  # seeds `chosen` but not sized yet: a plan's guess

    @property
    def name(self) -> str:
        return super().name + (f"-x{self.budget_factor}" if self.budget_factor != 1 else "") + \
            ("-probe" if self.probe_only else "")

    @property
    def label(self) -> str:
        return super().label + (f" at {self.budget_factor}x the budget" if self.budget_factor != 1 else "") + \
            (" (probes only)" if self.probe_only else "")


@dataclass(frozen=True)
class Endpoint(Cell):
    """A cell whose gain the study tests: the primary, or one of the secondary family."""

    primary: bool


@dataclass(frozen=True)
class Protocol:
    path: Path
    digest: str              # sha1 of the file's bytes: what the report prints and study.json records
    question: str
    profile: str             # conf/profile/<profile>.yaml: the recipe every arm runs
    metric: str              # the compared number of each run (compare.json runs), e.g. test_f1_macro
    alpha: float
    margin: float            # equivalence margin, in the metric's units
    assumed_sd: dict[float, float]  # fraction -> standard deviation of a seed's paired gain, assumed for power
    sd_source: str
    budgets: dict[float, int | None]  # fraction -> fine-tune epochs (passes over the 100 % pool), chosen on
    # validation; None: declared `chosen` (fixed by `budget_source` before its arms run) and not chosen yet
    capped: tuple[float, ...]  # fractions whose budget the study's time limit held below the validation plateau
    arms: tuple[Arm, ...]
    endpoints: tuple[Endpoint, ...]  # the primary first
    estimate: dict[str, float]  # seconds a pretraining, a fine-tune epoch, an arm's other stages (study.run)
    draft: str = ""  # what is still undecided; a draft protocol runs nothing and answers nothing
    numerics: dict[str, Any] = field(default_factory=dict)  # hardware knobs pinned for every run (precision, compile)
    budget_source: str = ""  # the `study budgets` file whose `chosen` fixes each budget declared `chosen`
    chosen: tuple[float, ...] = ()  # the fractions whose budget the protocol leaves to that file
    sized: tuple[float, ...] = ()  # the fractions whose seeds (and assumed sd) the protocol leaves to that file
    unsized: tuple[float, ...] = ()  # of those, the ones the file does not size yet: their arms' seeds are the
    # plan's assumption, and they do not run
    budget_rule: dict[str, Any] = field(default_factory=dict)  # {rule, tol[, cap]}: what `study budgets` must have
    # used (cap: per share, the largest budget it may take; a share that reached it unchosen is `capped`)

    def check_final(self) -> None:
        if self.draft:
            raise UserError(f"{self.path} is a draft ({self.draft}): decide that, remove `draft`, commit it, then run "
                            f"the study")

    @property
    def primary(self) -> Endpoint:
        return self.endpoints[0]

    @property
    def secondary(self) -> tuple[Endpoint, ...]:
        return self.endpoints[1:]

    def arm(self, pretext: str, fraction: float) -> Arm | None:
        """The cell's fine-tuned arm at the fraction's own budget (the one an endpoint tests)."""
        return next((a for a in self.cell_arms(pretext, fraction) if a.budget_factor == 1 and not a.probe_only),
                    None)

    def cell_arms(self, pretext: str, fraction: float) -> list[Arm]:
        return [a for a in self.arms if a.pretext == pretext and abs(a.fraction - fraction) < 1e-9]

    def budget(self, arm: Arm) -> int:
        budget = self.budgets[arm.fraction]
        if budget is None:
            raise UserError(f"the {arm.fraction:.0%} budget is not chosen yet: {self.path} leaves it to "
                            f"{self.budget_source}; run `python -m study budgets --fractions {arm.fraction:g} ... --out "
                            f"{self.budget_source}` (docs/results.md, 'Budgets') and commit it first")
        return budget * arm.budget_factor

    def planned_budget(self, arm: Arm) -> int:
        """The arm's budget, or for a share whose budget is not chosen yet its cap or else twice the largest chosen
        one (what the plan assumes)."""
        known = [b for b in self.budgets.values() if b is not None]
        cap = self.budget_rule.get("cap", {}).get(arm.fraction)  # float shares: load_protocol's
        base = self.budgets[arm.fraction] or cap or 2 * max(known, default=8)
        return base * arm.budget_factor

    def ready(self, arm: Arm) -> str:
        """Why the arm cannot run yet (its budget or its seeds not chosen yet), or '' where it can."""
        if not arm.probe_only and self.budgets[arm.fraction] is None:
            return f"its budget is not chosen yet ({self.budget_source} has no choice at {arm.fraction:g})"
        if arm.seeds_open:
            return f"its seeds are not chosen yet ({self.budget_source} has no paired runs at {arm.fraction:g}'s budget)"
        return ""

    def power(self, endpoint: Endpoint) -> dict[str, float | int | None]:
        """What the endpoint's seeds can show at the assumed spread: the power of the paired test to detect a
        gain of the margin, and of the equivalence test to show no gain (true difference 0); None where the
        spread is not chosen yet."""
        arm = self.arm(endpoint.pretext, endpoint.fraction)
        n = len(arm.seeds) if arm else 0
        sd = self.assumed_sd[endpoint.fraction]
        if sd is None:
            return {"seeds": n, "assumed_sd": None, "expected_half_width": None, "detect_margin": None,
                    "show_equivalence": None}
        half = float(stats.t.ppf(1 - self.alpha / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else None
        return {"seeds": n, "assumed_sd": sd, "expected_half_width": half, **self.power_at(n, sd)}

    def power_at(self, n: int, sd: float) -> dict[str, float]:
        """The power of `n` seeds whose paired gains spread by `sd`: of the paired test to detect a gain of the
        margin, and of the equivalence test to show no gain (true difference 0)."""
        return {"detect_margin": power_paired(n, sd, self.margin, self.alpha),
                "show_equivalence": power_equivalence(n, sd, self.margin, self.alpha)}

    def summary(self) -> dict[str, Any]:
        """What study.json records of the protocol it was held to."""
        return {"path": self.path.as_posix(), "sha1": self.digest, "question": self.question,
                "profile": self.profile, "metric": self.metric, "alpha": self.alpha, "margin": self.margin,
                "assumed_sd": {str(f): sd for f, sd in sorted(self.assumed_sd.items())}, "sd_source": self.sd_source,
                "budgets": {str(f): e for f, e in sorted(self.budgets.items())}, "capped": list(self.capped),
                "chosen_by": {"source": self.budget_source, "fractions": list(self.chosen)} if self.chosen else None,
                "seeds_chosen_by": {"source": self.budget_source, "fractions": list(self.sized),
                                    "not_yet": list(self.unsized)} if self.sized else None,
                "budget_rule": self.budget_rule or None,
                "arms": [{"pretext": a.pretext, "fraction": a.fraction, "seeds": list(a.seeds), "name": a.name,
                          "budget_factor": a.budget_factor, "probe_only": a.probe_only} for a in self.arms],
                "numerics": self.numerics,
                "primary": {"pretext": self.primary.pretext, "fraction": self.primary.fraction},
                "secondary": [{"pretext": e.pretext, "fraction": e.fraction} for e in self.secondary]}


def _need(doc: dict, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in doc:
        raise UserError(f"{path}: `{key}` is missing: the protocol must declare it (docs/protocol.md)")
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"{path}: `{key}` is {value!r}; expected {names}")
    return value


def _where(entry: Any, what: str, path: Path) -> tuple[str, float]:
    if not isinstance(entry, dict) or set(entry) != {"pretext", "fraction"}:
        raise UserError(f"{path}: {what} {entry!r} must be {{pretext: <task>, fraction: <share>}}")
    return str(entry["pretext"]), float(entry["fraction"])


ESTIMATE = ("pretrain_seconds", "finetune_epoch_seconds", "arm_other_seconds")


def _estimate(doc: dict, path: Path) -> dict[str, float]:
    estimate = _need(doc, "estimate", dict, path)
    if set(estimate) != set(ESTIMATE) or not all(isinstance(v, (int, float)) for v in estimate.values()):
        raise UserError(f"{path}: `estimate` must give seconds for {', '.join(ESTIMATE)}")
    return {k: float(v) for k, v in estimate.items()}


def load_protocol(path: Path = PROTOCOL) -> Protocol:
    """Read and check the protocol; a malformed one is refused in one line naming the key."""
    if not path.exists():
        raise UserError(f"{path} not found: the report holds the study to its protocol (docs/protocol.md)")
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(doc, dict):
        raise UserError(f"{path} must be a mapping of the protocol's keys (docs/protocol.md)")
    declared = _need(doc, "budgets", dict, path)
    chosen = tuple(float(f) for f, e in declared.items() if e == "chosen")
    source = str(doc.get("budget_source", ""))
    if chosen and not source:
        raise UserError(f"{path}: budgets declared `chosen` need `budget_source`, the `study budgets` file that "
                        f"fixes them")
    search = json.loads(Path(source).read_text()) if source and Path(source).exists() else {}
    rule = doc.get("budget_rule") or {}
    if rule and (not isinstance(rule, dict) or not {"rule", "tol"} <= set(rule) <= {"rule", "tol", "cap"}
                 or not isinstance(rule.get("cap", {}), dict)):
        raise UserError(f"{path}: `budget_rule` must be {{rule: <study budgets --rule>, tol: <its --tol>}}, "
                        f"optionally with cap: {{<share>: <its --cap>}}")
    caps = {float(f): e for f, e in (rule.get("cap") or {}).items()}
    if rule and search and (search.get("rule"), search.get("tol")) != (rule["rule"], rule["tol"]):
        raise UserError(f"{path}: `budget_rule` is {rule['rule']} with tol {rule['tol']}, but {source} was made "
                        f"with {search.get('rule')} and tol {search.get('tol')}: rerun `python -m study budgets "
                        f"--rule {rule['rule']} --tol {rule['tol']}` on it")
    picked = search.get("chosen", {}) if chosen else {}
    for f, e in search.get("capped", {}).items():  # the file took a cap: the one the protocol declares there
        if float(f) in chosen and caps.get(float(f)) != e:
            raise UserError(f"{path}: {source} caps the {float(f):.0%} budget at {e} epochs, but `budget_rule` "
                            + (f"caps it at {caps[float(f)]}" if float(f) in caps else "declares no cap there")
                            + f": rerun `python -m study budgets --fractions {float(f):g} --cap "
                              f"{caps.get(float(f), '<cap>')}` on it")
    for f, cap in caps.items():
        if (picked.get(str(f)) or 0) > cap:
            raise UserError(f"{path}: {source} chose {picked[str(f)]} epochs at {f:.0%}, above the cap `budget_rule` "
                            f"declares there ({cap}): rerun `python -m study budgets --fractions {f:g} --cap {cap}` on it")
    budgets: dict[float, int | None] = {}
    for f, e in declared.items():
        if e == "chosen":
            budgets[float(f)] = picked.get(str(float(f)))
        elif isinstance(e, int) and not isinstance(e, bool) and e >= 1:
            budgets[float(f)] = e
        else:
            raise UserError(f"{path}: budget {e!r} at {f}: give epochs (an integer >= 1) or `chosen`")
    capped = tuple(float(f) for f in doc.get("capped", []) or []) + tuple(  # declared, or the file took the cap
        sorted(float(f) for f in search.get("capped", {}) if float(f) in chosen))
    for f in capped:
        if f not in budgets:
            raise UserError(f"{path}: `capped` names fraction {f:g}, which has no entry in `budgets`")
    margin = float(_need(doc, "margin", (int, float), path))
    endpoints = _need(doc, "endpoints", dict, path)
    primary = Endpoint(*_where(endpoints.get("primary"), "endpoints.primary", path), primary=True)
    secondary = [Endpoint(*_where(e, "secondary endpoint", path), primary=False)
                 for e in endpoints.get("secondary", [])]
    sizes = {}
    if search:
        from study.budgets import seed_sizes  # the budget tool's own reading of its file
        sizes = seed_sizes(search, margin, primary.fraction)
    for f, (n, sd) in sizes.items():
        if n is None:
            raise UserError(f"{path}: {source}'s paired spread at {f:g} ({sd:.4f}) asks for more than 100 seeds")
    planned = max((n for n, _ in sizes.values()), default=5)  # what an unsized fraction is planned with
    sized, unsized = set(), set()
    arms = []
    for entry in _need(doc, "arms", list, path):
        if not isinstance(entry, dict) or not {"pretext", "fractions", "seeds"} <= set(entry) or \
                set(entry) - {"pretext", "fractions", "seeds", "budget_factor", "probe_only"}:
            raise UserError(f"{path}: arm {entry!r} must be {{pretext: <task>, fractions: [...], seeds: [...]}}, "
                            f"optionally with budget_factor: <int> or probe_only: true")
        factor, probe_only = entry.get("budget_factor", 1), entry.get("probe_only", False)
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1 or not isinstance(probe_only, bool):
            raise UserError(f"{path}: arm {entry['pretext']}: budget_factor must be an integer >= 1 and probe_only "
                            f"true or false")
        seeds = entry["seeds"]
        for fraction in entry["fractions"]:
            fraction = float(fraction)
            s = seeds.get(fraction, seeds.get(str(fraction))) if isinstance(seeds, dict) else seeds
            open_ = False
            if s == "chosen":
                if not source:
                    raise UserError(f"{path}: seeds declared `chosen` need `budget_source`, the `study budgets` "
                                    f"file whose paired spread sizes them")
                open_ = fraction not in sizes
                sized.add(fraction)
                if open_:
                    unsized.add(fraction)
                s = list(range(planned if open_ else sizes[fraction][0]))
            if not s or not isinstance(s, list) or not all(isinstance(x, int) for x in s):
                raise UserError(f"{path}: arm {entry['pretext']} at {fraction:g} has no list of integer seeds")
            if fraction not in budgets and not probe_only:
                raise UserError(f"{path}: fraction {fraction:g} has an arm but no entry in `budgets`")
            arms.append(Arm(str(entry["pretext"]), fraction, tuple(s), factor, probe_only, open_))
    assumed = {}
    for f, sd in _need(doc, "assumed_sd", dict, path).items():
        if sd == "chosen":
            assumed[float(f)] = sizes[float(f)][1] if float(f) in sizes else None
            sized.add(float(f))
            if float(f) not in sizes:
                unsized.add(float(f))
        elif isinstance(sd, (int, float)) and not isinstance(sd, bool) and sd > 0:
            assumed[float(f)] = float(sd)
        else:
            raise UserError(f"{path}: assumed_sd {sd!r} at {f}: give a standard deviation (> 0) or `chosen`")
    numerics = doc.get("numerics") or {}
    if not isinstance(numerics, dict) or set(numerics) - {"precision", "compile"} or \
            numerics.get("precision", "fp32") not in PRECISIONS or not isinstance(numerics.get("compile", False), bool):
        raise UserError(f"{path}: `numerics` must be {{precision: {' / '.join(PRECISIONS)}, compile: true / false}}")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: arm {next(n for n in names if names.count(n) > 1)} is declared twice")
    protocol = Protocol(
        path=path, digest=hashlib.sha1(raw).hexdigest(), question=" ".join(str(doc.get("question", "")).split()),
        profile=_need(doc, "profile", str, path), metric=_need(doc, "metric", str, path),
        alpha=float(_need(doc, "alpha", (int, float), path)), margin=margin, assumed_sd=assumed,
        sd_source=" ".join(str(doc.get("sd_source", "")).split()),
        budgets=budgets, capped=capped, arms=tuple(arms), endpoints=(primary, *secondary), estimate=_estimate(doc, path),
        draft=" ".join(str(doc.get("draft", "")).split()), numerics=numerics, budget_source=source, chosen=chosen,
        sized=tuple(sorted(sized)), unsized=tuple(sorted(unsized)),
        budget_rule=dict(rule, **({"cap": caps} if caps else {})))  # caps keyed by float share, as `budgets`
    for e in protocol.endpoints:
        if protocol.arm(e.pretext, e.fraction) is None:
            raise UserError(f"{path}: endpoint {e.label} has no arm that runs it")
        if e.fraction not in protocol.assumed_sd:
            raise UserError(f"{path}: endpoint {e.label} has no `assumed_sd` entry for its fraction (its power)")
    return protocol


def check_experiment(protocol: Protocol, exp: dict, budget: int) -> Arm:
    """The arm an experiment runs; refused in one line where it differs from the protocol."""
    params, name = exp["params"], exp["name"]
    profile = params.get("profile_name")
    if profile != protocol.profile:
        raise UserError(f"experiment {name} ran profile {profile!r}; {protocol.path} declares {protocol.profile!r} "
                        f"(rerun it with -S profile={protocol.profile}, or leave it out with --exp)")
    pretext, fraction = params["pretext"]["task"], float(params["fraction"])
    cell = [a for a in protocol.cell_arms(pretext, fraction) if a.probe_only == bool(exp.get("probes"))]
    if not cell:
        raise UserError(f"experiment {name} ({pretext} at {fraction:g}) is no arm of {protocol.path}: leave it out "
                        f"with --exp")
    arm = cell[0] if cell[0].probe_only else next((a for a in cell if protocol.budget(a) == budget), None)
    if arm is None:
        raise UserError(f"experiment {name} fine-tuned {budget} epochs at {fraction:g}; {protocol.path} declares "
                        f"{' or '.join(str(protocol.budget(a)) for a in cell)}")
    if list(params["seeds"]) != list(arm.seeds):
        raise UserError(f"experiment {name} ran seeds {params['seeds']}; {protocol.path} declares {list(arm.seeds)} "
                        f"for {arm.label}")
    return arm


def ordered(protocol: Protocol) -> list[Arm]:
    """The arms in running order: the primary's first, then the rest as protocol.yaml lists them (its order
    decides what an interrupted study has answered)."""
    return list(dict.fromkeys([protocol.arm(protocol.primary.pretext, protocol.primary.fraction), *protocol.arms]))


def remaining_seconds(protocol: Protocol, left: list[Arm], finished: list[Arm], rate: dict[str, float]) -> float:
    """Each piece of work once: a pretraining per (pretext, seed), a scratch fine-tune per (fraction, budget,
    seed), a pretrained one per fine-tuned arm and seed, whatever finished arms have not already made."""
    pretrained = {(a.pretext, s) for a in finished for s in a.seeds}
    scratch = {(a.fraction, protocol.planned_budget(a), s) for a in finished if not a.probe_only for s in a.seeds}
    seconds = 0.0
    for arm in left:
        budget = None if arm.probe_only else protocol.planned_budget(arm)
        for s in arm.seeds:
            if (arm.pretext, s) not in pretrained:
                seconds += rate["pretrain_seconds"]
                pretrained.add((arm.pretext, s))
            if arm.probe_only:
                continue
            if (arm.fraction, budget, s) not in scratch:
                seconds += budget * rate["finetune_epoch_seconds"]
                scratch.add((arm.fraction, budget, s))
            seconds += budget * rate["finetune_epoch_seconds"]
        seconds += rate["arm_other_seconds"]
    return seconds


def arm_estimates(protocol: Protocol, rate: dict[str, float]) -> dict[str, float]:
    """What each arm adds to the study in running order when the arms before it have run, at `rate`."""
    estimates, before = {}, []
    for arm in ordered(protocol):
        estimates[arm.name] = remaining_seconds(protocol, [arm], before, rate)
        before.append(arm)
    return estimates


def protocol_file_at(rev: str, path: Path = PROTOCOL) -> bytes | None:
    """The protocol's bytes in a commit (None where it has none): an experiment must run under the protocol the
    report holds it to."""
    import subprocess
    proc = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def describe(protocol: Protocol) -> str:
    """The line the report prints: which protocol it read."""
    return f"protocol: {protocol.path} (sha1 {protocol.digest[:12]}), {len(protocol.arms)} arms, " \
           f"primary {protocol.primary.label}, {len(protocol.secondary)} secondary endpoints" \
           + (f"; DRAFT: {protocol.draft}" if protocol.draft else "")


def power_table(protocol: Protocol) -> str:
    """Markdown: each endpoint's seeds and power, for docs/protocol.md."""
    lines = [f"| endpoint | seeds | assumed sd of a seed's gain | expected 95 % half-width | power to detect a gain "
             f"of {protocol.margin:g} | power to show equivalence (true gain 0) |", "|---|---|---|---|---|---|"]
    for e in protocol.endpoints:
        p = protocol.power(e)
        if p["assumed_sd"] is None:
            lines.append(f"| {e.label}{' (primary)' if e.primary else ''} | not chosen yet ({p['seeds']} planned) | "
                         f"not chosen yet | | | |")
            continue
        half = "n/a" if p["expected_half_width"] is None else f"{p['expected_half_width']:.4f}"
        lines.append(f"| {e.label}{' (primary)' if e.primary else ''} | {p['seeds']} | {p['assumed_sd']:.4f} | {half} | "
                     f"{p['detect_margin']:.2f} | {p['show_equivalence']:.2f} |")
    return "\n".join(lines)

