"""What is not a DVC stage: the benchmark and sizing scripts, and the reports that read across experiments
(`python -m tools.report`, `python -m tools.pretext_table`, `python -m tools.bench`)."""
