"""What the two training stages (pretrain, finetune) run around the engine: the stage start, the recipe of a params
section, the per-epoch log and its resume checkpoints. One dependency of those two stages in dvc.yaml."""
