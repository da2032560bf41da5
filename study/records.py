"""The study's record in Git: one small JSON file per finished arm, `metrics/arms/<arm>.json`, written by
`python -m study run` when the arm's DVC experiment finishes and committed at once. It holds what the report
needs of the experiment and nothing it must fetch: the arm's params, its metrics/compare.json (per-seed
figures, curves, tests; for a probe-only arm, each seed's linear_probe result instead), the commit its code ran
at, the protocol it ran under (sha1) and the machine it ran on. The report reads these files alone, so a fresh
clone of main regenerates study.json, the figures and the documents without DVC's cache or experiment refs, and
two machines that each ran some arms merge their records by merging their commits (one file an arm: no
conflicts).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from selfsup.core.files import save_json
from selfsup.core.params import UserError

RECORDS = Path("metrics/arms")
FIELDS = ("arm", "experiment", "baseline", "finished", "protocol_sha1", "machine", "params")


def machine() -> dict:
    """The machine a run is made on, as the report shows it: the CPU (name, and vendor/family/model/stepping:
    one name covers several generations), its cores, bf16 instructions, and the Python and torch versions."""
    import torch  # here: reading records needs no torch

    from selfsup.loop.precision_choice import cpu_id
    from selfsup.training.devices import describe_device
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                     "")
    except OSError:
        flags = ""
    return {"cpu": describe_device(torch.device("cpu")).split(": ", 1)[1].rsplit(",", 1)[0], "cpu_id": cpu_id(),
            "cores": os.cpu_count(), "bf16_instructions": "avx512_bf16" in flags or "amx_bf16" in flags,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def machines(m: dict | list[dict]) -> list[dict]:
    """The machines of a record: one, or several for an arm run in parts on different machines (study/parts.py)."""
    return m if isinstance(m, list) else [m]


def machine_label(m: dict | list[dict]) -> str:
    """One line for the documents: 'AMD EPYC (AuthenticAMD family 25 model 17 stepping 1), 2 cores'; an arm run
    in parts on several machines names each, joined by ' + '."""
    return " + ".join(f"{x['cpu']} ({x.get('cpu_id', '?')}), {x['cores']} cores" + (f", {x['gpu']}" if x.get("gpu")
                                                                                    else "") for x in machines(m))


def record_path(arm: str, root: Path = RECORDS) -> Path:
    return root / f"{arm}.json"


def write_record(record: dict, root: Path = RECORDS) -> Path:
    missing = [f for f in FIELDS if f not in record]
    if missing or ("compare" not in record and "probes" not in record):
        raise ValueError(f"an arm record needs {', '.join(missing) or 'compare or probes'}")
    path = record_path(record["arm"], root)
    save_json(record, path)
    return path


def read_record_file(path: Path, fields: tuple[str, ...], kind: str) -> dict:
    """One record file (an arm's, or a part's: study/parts.py) with `fields`; anything else refused in one line."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): restore it with `git checkout "
                        f"{path}`") from e
    if not isinstance(record, dict) or any(f not in record for f in fields):
        lacks = [f for f in fields if f not in record] if isinstance(record, dict) else ["every field"]
        raise UserError(f"{path} is no {kind} (it lacks {', '.join(lacks)})")
    return record


def read_records(root: Path = RECORDS) -> dict[str, dict]:
    """Every arm record under `root`, by arm name; a file that is no record is refused in one line."""
    records = {}
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        record = read_record_file(path, FIELDS, "arm record")
        if record["arm"] != path.stem:
            raise UserError(f"{path} holds arm {record['arm']!r}: an arm's record is named after it")
        records[record["arm"]] = record
    return records


def as_experiment(record: dict) -> dict:
    """A record in the shape the analysis takes an experiment (study.results: name, baseline, finished,
    params, compare), with the machine it ran on."""
    return {"name": record["experiment"], "baseline": record["baseline"], "finished": record["finished"],
            "params": record["params"], "compare": record.get("compare"), "probes": record.get("probes"),
            "machine": record["machine"], "wall_seconds": record.get("wall_seconds"), "arm": record["arm"]}
