"""An arm too long for one sitting, run in parts: each part a DVC experiment over a few of the arm's seeds (their
splits, pretrainings, both fine-tunes and probes: a seed's scratch and pretrained runs always run together, on one
machine), and each seed's run logs recorded in Git as soon as its part ends, `metrics/arms/parts/<arm>/seed<N>.json`.
A session that ends, or a machine that goes, loses at most the part it was running: `python -m study run` on any
machine runs only the seeds the record lacks. Once every seed of the arm has its part, the arm is assembled: the
`compare` stage's own script runs over the recorded logs of all its seeds (in a scratch directory, byte for byte
the files the runs wrote) and gives the arm's metrics/compare.json, recorded as a whole arm's is
(`metrics/arms/<arm>.json`, study/records.py) with the parts it came from.

A seed's part holds the files `compare` reads of it (its pretraining's, both fine-tunes' and its probe's logs;
gzip, base64, each with its sha256), the part's experiment, commit, machine and wall clock, and its params.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from selfsup.core import paths
from selfsup.core.files import save_json
from selfsup.core.params import UserError
from study.records import RECORDS, read_record_file

PARTS = RECORDS / "parts"
FIELDS = ("arm", "seed", "experiment", "baseline", "finished", "protocol_sha1", "machine", "part_seeds",
          "part_wall_seconds", "params", "files")
ROOT = Path(__file__).resolve().parents[1]


def part_path(arm: str, seed: int, root: Path = PARTS) -> Path:
    return root / arm / f"seed{seed}.json"


def seed_files(seed: int) -> list[Path]:
    """What `compare` reads of one seed, relative to the project: its pretraining's log, both fine-tunes' logs
    (history, summary, test predictions) and its probe's result."""
    dirs = [paths.pretrain_log(seed), *(paths.finetune_log(init, seed) for init in paths.INITS)]
    files = [f for d in dirs for f in sorted(d.rglob("*")) if f.is_file()]
    missing = [d for d in dirs if not d.is_dir()] + ([] if paths.probe_result(seed).is_file()
                                                     else [paths.probe_result(seed)])
    if missing:
        raise UserError(f"seed {seed}'s run logs are not in the workspace ({missing[0]}): its part did not finish")
    return files + [paths.probe_result(seed)]


def pack(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(),
            "gzip_base64": base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")}


def unpack(entry: dict, name: str) -> bytes:
    data = gzip.decompress(base64.b64decode(entry["gzip_base64"]))
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UserError(f"{name}: its recorded bytes do not match their sha256: restore the part with `git checkout`")
    return data


def write_parts(arm: str, seeds: list[int], experiment: dict, protocol_sha1: str, machine: dict,
                wall_seconds: float, root: Path = PARTS) -> list[Path]:
    """One part file per seed of the experiment that just ran them in the workspace (`experiment`: name, baseline,
    finished, params), from the files its stages left there."""
    written = []
    for seed in seeds:
        files = {f.as_posix(): pack(f.read_bytes()) for f in seed_files(seed)}
        record = {"arm": arm, "seed": seed, "experiment": experiment["name"], "baseline": experiment["baseline"],
                  "finished": experiment["finished"], "protocol_sha1": protocol_sha1, "machine": machine,
                  "part_seeds": list(seeds), "part_wall_seconds": round(wall_seconds, 1),
                  "params": experiment["params"], "files": files}
        path = part_path(arm, seed, root)
        save_json(record, path)
        written.append(path)
    return written


def read_parts(arm: str, root: Path = PARTS) -> dict[int, dict]:
    """The recorded parts of `arm`, by seed; a file that is no part of it is refused in one line."""
    parts = {}
    for path in sorted((root / arm).glob("seed*.json")) if (root / arm).is_dir() else []:
        part = read_record_file(path, FIELDS, "part record")
        if part["arm"] != arm or path.name != f"seed{part['seed']}.json":
            raise UserError(f"{path} holds seed {part['seed']} of arm {part['arm']!r}: a part is named after both")
        parts[part["seed"]] = part
    return parts


def experiments_of(parts: list[dict]) -> list[dict]:
    """Each part's experiment once, in the order they finished: name, baseline, finished, seeds, machine and
    wall clock."""
    seen: dict[tuple[str, str], dict] = {}
    for p in sorted(parts, key=lambda p: (p["finished"], p["seed"])):
        seen.setdefault((p["baseline"], p["experiment"]), {
            "experiment": p["experiment"], "baseline": p["baseline"], "finished": p["finished"],
            "seeds": p["part_seeds"], "machine": p["machine"], "wall_seconds": p["part_wall_seconds"]})
    return list(seen.values())


def assemble(parts: dict[int, dict], seeds: list[int], dataset: Path = paths.DATASET) -> dict:
    """The arm's metrics/compare.json: the `compare` stage's script run over the recorded logs of `seeds`, in a
    scratch directory holding those files, the parts' params (with all the seeds) and this workspace's dataset."""
    if not dataset.is_dir():
        raise UserError(f"{dataset} is missing: the arm's comparison reads the test images; `dvc repro download` "
                        f"first")
    params = dict(parts[seeds[0]]["params"]) | {"seeds": list(seeds)}
    with tempfile.TemporaryDirectory(prefix="study-assemble-") as tmp:
        work = Path(tmp)
        for seed in seeds:
            for name, entry in parts[seed]["files"].items():
                target = work / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(unpack(entry, f"{part_path(parts[seed]['arm'], seed)}: {name}"))
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.copy("hardware.yaml", work / "hardware.yaml")  # the stages check it is there; compare reads none of it
        (work / dataset).parent.mkdir(parents=True, exist_ok=True)
        (work / dataset).symlink_to(dataset.resolve(), target_is_directory=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-m", "stages.compare"], cwd=work, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise UserError(f"the comparison of the recorded parts failed: {lines[-1] if lines else proc.returncode}")
        return json.loads((work / "metrics" / "compare.json").read_text())
