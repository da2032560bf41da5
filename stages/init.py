"""Stage `init`: the randomly initialised feature extractor that both fine-tunes start from.

`finetune@scratch` fine-tunes it as it is; `pretrain` trains it on the pretext first. Saving it once makes
"only the initial weights differ" literal, and lets finetune@scratch ignore every pretext param.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import load_params, param, run_stage, seed_everything
from stages.models import build_extractor, save_extractor

OUT = Path("models/init/scratch.pt")


def main() -> None:
    params = load_params()
    seed_everything(param(params, "seed", int))
    arch, stem = param(params, "model.arch", str), param(params, "model.stem", str)
    extractor, feat_dim = build_extractor(arch, stem)
    save_extractor(extractor, arch, stem, feat_dim, OUT)
    print(f"init: random {arch} ({stem} stem, {feat_dim}-d features) -> {OUT}")


if __name__ == "__main__":
    run_stage(main, outputs=[OUT])
