"""The study's stage scripts, one per DVC stage in dvc.yaml: thin `main`s that read their params and call the
library in selfsup/. Run them through DVC (`dvc repro`), or one directly: `python -m stages.<name>`."""
