"""The library the stage scripts call: data and splits, augmentation, backbones, pretext tasks, the one training
engine, linear evaluation, statistics and figures, the file layout and the params' rules (see docs/pipeline.md)."""
