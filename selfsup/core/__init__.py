"""What every stage runs: reading params.yaml, the file layout, atomic writes, running a stage script, and the
dataset format on disk. One dependency of every stage in dvc.yaml (the package: every stage imports all of it)."""
