"""Developer tools, not DVC stages and not the study's machinery (that is the `study` package): the benchmark and
its roofline (`python -m tools.bench`), the precision check (`python -m tools.precision_check`) and the docs
generator (`python -m tools.params_doc`)."""
