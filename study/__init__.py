"""The study's machinery, apart from the pipeline it runs: the protocol (protocol.yaml), running its arms as DVC
experiments, the report held to the protocol, the committed record, and the tools that choose budgets and recipes
on validation. One command, `python -m study <plan|run|record|report|budgets|tune|pretexts>` (study/__main__.py).

- protocol.py: protocol.yaml read and checked, the power of each endpoint;
- run.py: the arms run as DVC experiments, resumably (plan, run, record);
- experiments.py: reading experiments from Git and DVC, and the checks that pooled ones belong together;
- results.py: the experiments pooled into metrics/study.json, the endpoints judged as declared;
- report.py, report_text.py: the command that writes study.json, the figures, docs/results.md and README's answer;
- budgets.py: fine-tune budgets chosen on validation by doubling; tune.py: recipe sweeps on validation;
- pretext_table.py: the pretexts compared (docs/pretexts.md); markdown.py: the documents' shared formatting.
"""
