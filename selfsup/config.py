"""Every param of the pipeline, declared once: its default, its rule (type, range, choices) and a one-line meaning.

One small pydantic model per params.yaml section. pydantic does the type, range and choice checks and the
unknown-key check (`extra="forbid"`); `strict=True` keeps YAML's types honest (no "1" for 1, no 1 for true).
What is generated from these declarations (`python -m tools.params_doc`, checked by tests/test_docs.py):
conf/config.yaml and conf/pretext/*.yaml (the Hydra sources of params.yaml), the table of docs/params.md and
the README's knob table. Every stage checks all of params.yaml against `Params` at its start
(`check_params`), before it reads data or writes anything; a violation is one line naming the param.

This module only checks: it cannot change an output, so it is no stage's dependency in dvc.yaml (adding a
param or changing a default here re-runs nothing by itself; the values stages read come from params.yaml).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from selfsup.core.params import HARDWARE_FILE, PARAMS_FILE, PRECISIONS, STEMS, UserError, read_mapping
from selfsup.pretexts import TASKS
from selfsup.sources import SOURCES

Stem = Literal.__getitem__(STEMS)  # type: ignore[valid-type]  # the names the code below declares
Precision = Literal.__getitem__(PRECISIONS)  # type: ignore[valid-type]

def knob(default: Any, meaning: str, **rule: Any) -> Any:
    """A param: its default, its one-line meaning and its rule (pydantic's gt/ge/le/min_length...)."""
    return Field(default, description=meaning, **rule)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


Share = Annotated[float, Field(ge=0, le=1)]


class Data(Section):
    """What the data is. Where this machine reads it from is hardware.yaml's `data_location` (no stage declares
    it: a mirror re-runs nothing)."""

    source: Literal.__getitem__(SOURCES) = knob(  # type: ignore[valid-type]  # selfsup.sources's names
        "cifar10", "cifar10 / cifar10-jpeg (the JPEG export the cpu study reads) / cifar100 / stl10 (its unlabeled "
                   "images go to pretraining only) / folder (your images: set data_location in hardware.yaml)")
    digest: str = knob("", "sha256:<hex> of the decoded images, labels and class names, whatever container holds "
                           "them (docs/datasets-and-backbones.md); a copy that differs is refused; empty: unchecked",
                       pattern=r"^(sha256:[0-9a-f]{64})?$")
    image_size: int | None = knob(None, "resize every image to this square size; null: the source's own "
                                        "(32 CIFAR, 96 STL-10)", ge=8)


class Split(Section):
    val_fraction: float = knob(0.1, "share of every class held out for validation; never depends on fraction",
                               gt=0, le=0.5)


def arch_code(arch: str) -> str:
    """The code that builds `model.arch`, as a dvc.yaml dependency: `nets` for your own networks there
    (`nets.fast_cnn:half`), the module's file for another `module:function`, and for a torchvision model
    `selfsup/training` (the package that builds it, a dependency of those stages anyway)."""
    if ":" not in arch:
        return "selfsup/training"
    module = arch.split(":", 1)[0]
    return "nets" if module.split(".")[0] == "nets" else module.replace(".", "/") + ".py"


class Model(Section):
    arch: str = knob("resnet18", "any torchvision classification model name, or module:function (nets/)")
    stem: Stem = knob("cifar", "cifar (3x3 stride-1 first conv, no max-pool) / half (3x3 stride 2, no max-pool) / "
                               "imagenet (as torchvision builds it)")
    code: str = Field("selfsup/training", description="the code that builds model.arch, a dependency of the "
                      "stages that build it (derived: `dvc exp run` resolves it from model.arch)",
                      json_schema_extra={"hydra": "${arch_code:${model.arch}}"})

    @model_validator(mode="after")
    def _code_of_arch(self) -> Model:
        if self.code != arch_code(self.arch):
            raise ValueError(f"param 'model.code' is {self.code!r} but model.arch {self.arch!r} is built by "
                             f"{arch_code(self.arch)!r}: compose params.yaml with `dvc exp run -S model.arch=...` (it "
                             f"derives model.code), or set model.code to {arch_code(self.arch)!r}")
        return self


class Context(Section):
    upscale: int = knob(2, "cut patches from the image upscaled by this factor", ge=1)
    patch_size: int = knob(20, "patch side in upscaled pixels (the extractor's input size while pretraining)", ge=4)
    gap: int = knob(4, "pixels between neighbouring patches (upscaled)", ge=0)
    jitter: int = knob(2, "each patch moves by up to this many upscaled pixels each way", ge=0)
    gray_prob: float = knob(0.5, "share of pairs dropped to gray", ge=0, le=1)
    brightness: float = knob(0.2, "per-patch brightness shift, up to this in [0, 1] pixel units", ge=0, le=1)
    contrast: float = knob(0.2, "per-patch contrast factor in 1 +- this", ge=0, le=1)
    flip: bool = knob(True, "flip images horizontally at random before cutting")
    crop_min: float = knob(1.0, "cut from a random square crop of at least this share of the side (1: none)",
                           ge=0.25, le=1)
    fusion: Literal["pooled", "spatial"] = knob(
        "spatial", "pooled: MLP on the two pooled feature vectors; spatial: on the two feature maps")
    shift: float = knob(0.25, "move each image by up to this share of its side each way before cutting, the "
                             "uncovered border filled by reflection (0: not moved)", ge=0, le=0.5)
    placement: Literal["pair", "grid"] = knob(
        "pair", "pair: the centre anywhere the drawn pair fits (its range depends on the label); grid: anywhere "
        "the whole 3x3 grid fits (the same range for every label)")


class Jigsaw(Section):
    permutations: int = knob(100, "size of the fixed set of tile orders (max-min Hamming distance)", ge=2, le=1000)
    upscale: int = knob(4, "the 3x3 grid is cut on the image upscaled by this factor", ge=1)
    patch_size: int = knob(24, "tile side in upscaled pixels", ge=4)
    gap: int = knob(8, "pixels between neighbouring tiles (upscaled)", ge=0)
    jitter: int = knob(3, "each tile moves by up to this many upscaled pixels each way", ge=0)
    rescale_prob: float = knob(0.5, "share of tiles scaled down and up again", ge=0, le=1)
    rescale_min: float = knob(0.4, "smallest such scale factor", ge=0.1, le=1)


class Rotation(Section):
    crop_padding: int = knob(4, "random crop (reflect padding) and flip before rotating", ge=0)


class Reconstruction(Section):
    mask_ratio: float = knob(0.5, "share of block x block squares blanked out", gt=0, le=1)
    block: int = knob(8, "side of a blanked square; must divide the image size", ge=1)
    noise_std: float = knob(0.1, "Gaussian noise on every pixel, in [0, 1] units", ge=0)
    visible_weight: float = knob(0.1, "loss weight of the pixels that were not blanked", ge=0)


class SimCLR(Section):
    temperature: float = knob(0.5, "NT-Xent temperature", gt=0)
    crop_min: float = knob(0.2, "smallest crop, as a share of the image area", ge=0.01, le=1)
    color_strength: float = knob(0.5, "colour jitter strength", ge=0, le=1)
    projection_dim: int = knob(128, "projection head output size", ge=1)


# each task's own section, by the task's name in selfsup.pretexts.TASKS (a test checks the two agree)
TASK_PARAMS: dict[str, type[Section]] = {"context": Context, "reconstruction": Reconstruction,
                                         "rotation": Rotation, "jigsaw": Jigsaw, "simclr": SimCLR}


class PretextCommon(Section):
    task: Literal.__getitem__(tuple(TASKS)) = knob(  # type: ignore[valid-type]  # the registry's names
        "context", "the pretext task; select it with -S pretext=<task> (a Hydra group: params.yaml then holds that "
                   "task's section alone, see docs/pretexts.md)")
    epochs: int = knob(30, "pretext training epochs", ge=1)
    batch_size: int = knob(512, "pretext batch (pairs, tuples or images, by task)", ge=2)
    lr: float = knob(0.1, "peak learning rate (Nesterov SGD, warm-up then cosine)", gt=0)
    weight_decay: float = knob(0.0005, "weight decay", ge=0)
    warmup_epochs: float = knob(1.0, "linear warm-up length, in epochs", ge=0)
    probe_size: int = knob(5000, "validation images (never pretrained on) for the probe, held-out score and "
                                 "controls", ge=20)
    monitor_every: int = knob(5, "epochs between those monitors (the untrained network and the last epoch are "
                                 "always measured, all probe_size images each time)", ge=1)
    eval_batch_size: int = knob(1024, "inference batch of the probe and held-out scores", ge=1)

    @model_validator(mode="after")
    def _task_section(self) -> PretextCommon:
        if getattr(self, self.task) is None:
            raise ValueError(f"param 'pretext.{self.task}' is missing from params.yaml: select the task as a Hydra group, "
                             f"`dvc exp run -S pretext={self.task}`, which brings its params")
        return self


# the task sections, one optional field per entry of TASK_PARAMS: params.yaml holds the chosen task's
Pretext = create_model("Pretext", __base__=PretextCommon,
                       **{task: (section | None, None) for task, section in TASK_PARAMS.items()})


class Finetune(Section):
    epochs: int = knob(30, "fine-tune epochs, in passes over the 100 % labelled pool (every fraction gets the "
                           "same steps unless listed in epochs_by_fraction)", ge=1)
    epochs_by_fraction: list[tuple[float, int]] = knob(
        [], "[[fraction, epochs], ...]: a fraction's own fine-tune budget, e.g. [[0.5, 16], [1.0, 32]]")
    batch_size: int = knob(512, "fine-tune batch", ge=2)
    lr: float = knob(0.2, "peak learning rate (Nesterov SGD, warm-up then cosine)", gt=0)
    weight_decay: float = knob(0.0005, "weight decay", ge=0)
    warmup_epochs: float = knob(1.0, "linear warm-up length, in epochs", ge=0)
    label_smoothing: float = knob(0.1, "label smoothing of the cross-entropy", ge=0, le=0.5)
    crop_padding: int = knob(4, "random crop (reflect padding) and flip of the labelled images", ge=0)
    eval_batch_size: int = knob(1024, "inference batch of validation and test", ge=1)

    @field_validator("epochs_by_fraction", mode="before")
    @classmethod
    def _pairs(cls, entries: Any) -> Any:
        """[fraction, epochs] pairs, fraction in (0, 1], epochs >= 1, no fraction twice (YAML gives lists)."""
        if not isinstance(entries, list):
            raise ValueError("expected a list of [fraction, epochs] pairs")
        for entry in entries:
            if not (isinstance(entry, list | tuple) and len(entry) == 2 and is_number(entry[0]) and 0 < entry[0] <= 1
                    and is_int(entry[1]) and entry[1] >= 1):
                raise ValueError(f"holds {entry!r}: expected [fraction, epochs] pairs with 0 < fraction <= 1 and "
                                 f"epochs >= 1, e.g. [[0.5, 16], [1.0, 32]]")
        fractions = [float(e[0]) for e in entries]
        if len(set(fractions)) != len(fractions):
            raise ValueError("a fraction appears twice")
        return [(float(f), e) for f, e in entries]


class Probe(Section):
    C: list[Annotated[float, Field(gt=0)]] = knob(
        [0.001, 0.01, 0.1, 1.0], "inverse regularisation strengths tried; the best on validation macro-F1 is kept",
        min_length=1)
    max_iter: int = knob(300, "iterations of the logistic regression's solver", ge=1)
    batch_size: int = knob(1024, "feature-extraction batch", ge=1)
    calibration_images: int = knob(5000, "labelled training images (labels unused) that re-estimate BatchNorm "
                                         "statistics", ge=1)
    grid: int = knob(2, "features: the last pool widened to a grid x grid map (1: the pooled vector)", ge=1, le=8)


class Compare(Section):
    plateau: float = knob(0.95, "plateau threshold: this share of the better init's mean best validation F1",
                          gt=0, le=1)
    confidence: float = knob(0.95, "confidence level of the intervals over seeds", ge=0.5, le=0.999)
    amortise_over: int = knob(3, "fractions that reuse one pretraining: its time is shared among them", ge=1)


class Hardware(Section):
    """hardware.yaml: how this machine runs the study, not what it computes. No stage declares these, so
    changing one re-runs nothing (`dvc exp run -S hardware.yaml:precision=fp32 --force` to rerun); every run
    records the numerics they resolved to (selfsup.training.devices.numerics) and the report pools only runs
    whose records agree."""

    device: Literal["auto", "cpu", "cuda", "mps"] = knob("auto", "auto (CUDA, then MPS, then CPU) / cpu / cuda / mps")
    nproc: int = knob(1, "processes for pretrain and fine-tune (torchrun; one GPU each, gloo on a CPU)", ge=1)
    compile: bool | Literal["auto"] = knob(
        "auto", "torch.compile the training forward: auto (where measured faster on this machine for that network "
                "and batch; the verdict is cached, docs/speed.md) / true / false")
    precision: Precision = knob("auto", "autocast dtype: auto (CUDA: bf16, fp16 on older GPUs; a CPU with bf16 "
                                        "instructions: bf16 where a step measured faster, cached) / bf16 / fp16 / fp32")
    stream: Literal["auto", "always", "never"] = knob(
        "auto", "images from memory-mapped arrays instead of device memory: auto (when they would take over half "
                "the free device memory) / always / never")
    data_location: str = knob(
        "", "where this machine reads data.source from: empty, its public location (downloaded into data/raw/); "
            "else a path, file:// URL or URL of a copy (a directory, .zip or .tar.gz)")

    @model_validator(mode="after")
    def _compile_alone(self) -> Hardware:
        if self.compile and self.nproc > 1:
            raise ValueError(f"param 'compile' is true with nproc={self.nproc}: torch.compile breaks its graph at every "
                             "synced BatchNorm of a multi-process run, so it is slower, not faster; set compile "
                             "false or nproc 1")
        return self


class Params(Section):
    seeds: list[int] = knob([0, 1, 2], "the replicates: each seed its own split, pretraining, probes and "
                                       "fine-tunes; the intervals are over these", min_length=1)
    fraction: float = knob(1.0, "share of the labelled pool fine-tuned on (nested: 10 % inside 50 % inside 100 %)",
                           gt=0, le=1)
    profile_name: str = knob("full", "the profile params.yaml was composed with (conf/profile/)")
    data: Data = Field(default_factory=Data)
    split: Split = Field(default_factory=Split)
    model: Model = Field(default_factory=Model)
    pretext: Pretext = Field(default_factory=lambda: Pretext(context=Context()))
    finetune: Finetune = Field(default_factory=Finetune)
    probe: Probe = Field(default_factory=Probe)
    compare: Compare = Field(default_factory=Compare)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("the seeds must differ")
        return seeds


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------- reading the declarations


def fields(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> pydantic FieldInfo of every param (a leaf: not a section), in declaration order: params.yaml's
    (the task sections under `pretext.<task>.`), then hardware.yaml's."""
    if model is None:
        return fields(Params) | fields(Hardware)
    out = {}
    for name, info in model.model_fields.items():
        section = _section(info.annotation)
        if section is not None:
            out.update(fields(section, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


def _section(annotation: Any) -> type[Section] | None:
    for kind in (annotation, *get_args(annotation)):
        if isinstance(kind, type) and issubclass(kind, Section):
            return kind
    return None


def hardware_knobs() -> frozenset[str]:
    """The knobs of hardware.yaml: they change how fast a run goes, not what it computes; no stage declares them
    in dvc.yaml, and the report and the tuning tools let experiments differ in them (the numerics they record
    may not)."""
    return frozenset(Hardware.model_fields)


def declared_default(info: Any) -> Any:
    """A field's declared default as YAML writes it (the [fraction, epochs] pairs as lists, not tuples)."""
    value = info.get_default(call_default_factory=True)
    return [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, list) else value


def defaults(model: type[BaseModel] = Params, tasks: bool = False) -> dict[str, Any]:
    """The declared defaults as nested dicts; the task sections only with `tasks`."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        section = _section(info.annotation)
        if section is not None:
            if issubclass(model, PretextCommon) and name in TASK_PARAMS and not tasks:
                continue
            out[name] = defaults(section, tasks)
        else:
            out[name] = declared_default(info)
    return out


def rule(info: Any) -> str:
    """What a param may be, in words: its type and its bounds or choices."""
    return _rule(info.annotation, info.metadata)


def _rule(annotation: Any, metadata: list[Any]) -> str:
    args = get_args(annotation)
    origin = getattr(annotation, "__origin__", None)
    if origin is Literal:
        return " / ".join(map(str, args))
    bounds = [f"{sign} {getattr(m, attr)}" for m in metadata
              for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="))
              if getattr(m, attr, None) is not None]
    if origin is list:
        item = args[0]
        inner = (_rule(get_args(item)[0], [m for info in get_args(item)[1:] for m in info.metadata])
                 if hasattr(item, "__metadata__") else _rule(item, []))
        text = f"list of {inner.replace(', ', ' ')}" if inner != "tuple[float, int]" else "list of [fraction, epochs]"
    elif origin is tuple:
        text = f"tuple[{', '.join(a.__name__ for a in args)}]"
    elif args:  # X | None, bool | Literal["auto"]
        text = " / ".join("null" if a is type(None) else _rule(a, []) if get_args(a) else a.__name__ for a in args)
    else:
        text = annotation.__name__
    return text + (", " + ", ".join(bounds) if bounds else "")


# ---------------------------------------------------------------- checking params.yaml


def check_files(params_file: Path = PARAMS_FILE, hardware_file: Path = HARDWARE_FILE) -> None:
    """What every stage runs first: params.yaml and hardware.yaml checked, each holding its own keys."""
    params, hardware = read_mapping(params_file), read_mapping(hardware_file)
    for key in sorted(hardware_knobs() & set(params)):
        raise UserError(f"param '{key}' is a hardware knob: set it in {hardware_file}, not {params_file} "
                        f"(`dvc exp run -S {hardware_file}:{key}=...`)")
    for key in sorted(set(hardware) - hardware_knobs()):
        raise UserError(f"{hardware_file} holds '{key}', which is no hardware knob ({', '.join(sorted(hardware_knobs()))}):"
                        f" set it in {params_file}")
    check_params(params | hardware)


def check_params(params: dict[str, Any]) -> Params:
    """Check every param of params.yaml and hardware.yaml, given as one mapping (the hardware knobs at its top
    level); the first problem is a UserError naming the key, the value and what is allowed."""
    hardware = {k: v for k, v in params.items() if k in hardware_knobs()}
    study = {k: v for k, v in params.items() if k not in hardware_knobs()}
    checked = _validate(Hardware, hardware, params)
    _require_every_key(checked)
    checked = _validate(Params, study, params)
    _require_every_key(checked)
    return checked


def _validate(model: type[Section], values: dict[str, Any], params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")  # unknown keys first
        raise UserError(describe(errors[0], params)) from None


def _require_every_key(section: BaseModel, prefix: str = "") -> None:
    """params.yaml holds every param (DVC tracks the file's values, not these defaults); only the task sections
    of the tasks not chosen may be absent."""
    for name in type(section).model_fields:
        value = getattr(section, name)
        if name not in section.model_fields_set and not (isinstance(section, Pretext) and name in TASK_PARAMS):
            where = HARDWARE_FILE if isinstance(section, Hardware) else PARAMS_FILE
            raise UserError(f"param '{prefix}{name}' is missing from {where}: add it (see docs/params.md)")
        if isinstance(value, Section):
            _require_every_key(value, f"{prefix}{name}.")


def describe(error: dict[str, Any], params: dict[str, Any]) -> str:
    """One line for one pydantic error: the dotted key, its value, what is allowed."""
    key, node = [], params
    kind, ctx = error["type"], error.get("ctx", {})
    for part in error["loc"]:
        if not isinstance(part, str) or not isinstance(node, dict) or (part not in node and kind != "missing"):
            break  # past the param's key: a list index, or the member of a union the value failed
        key.append(part)
        node = node.get(part)
    name = ".".join(key) or "params.yaml"
    if len(key) < len(error["loc"]) and isinstance(error["loc"][len(key)], str) and name in fields():
        return f"param '{name}' is {node!r}: expected {rule(fields()[name])}"  # none of a union's types
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, list(fields()), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"param '{name}' is not a param of this pipeline: {hint}(see docs/params.md)"
    if kind == "missing":
        return f"param '{name}' is missing from params.yaml: add it (see docs/params.md)"
    value = node if len(key) == len([p for p in error["loc"] if isinstance(p, str)]) else error["input"]
    if name in ("seeds", "probe.C") and isinstance(value, list) and (kind == "too_short" or not all(
            is_number(v) and (name == "probe.C" and v > 0 or name == "seeds" and is_int(v)) for v in value)):
        what = "integers" if name == "seeds" else "positive numbers"
        return f"param '{name}' is {value!r}: expected a non-empty list of {what}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"param '{name}' is {value!r}: must be {bounds[kind]} {limit}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])
        return f"param '{name}' is {value!r}: choose one of {', '.join(choices)}"
    if kind.endswith("_type") or kind in ("bool_parsing", "int_from_float"):
        expected = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
                    "list_type": "list", "model_type": "a mapping", "tuple_type": "a pair", "dict_type": "a mapping"}
        return f"param '{name}' is {value!r}: expected {expected.get(kind, kind.removesuffix('_type'))}"
    if kind == "string_pattern_mismatch":
        return f"param '{name}' is {value!r}: expected sha256:<64 hex digits>, or empty"
    message = str(ctx.get("error", error["msg"]))
    if message.startswith("param '"):  # a check across params says it all
        return message
    return f"param '{name}' is {value!r}: {message}"
