"""The metrics `compare` reports per run and tests between the two inits, each with the words the reports use
for it. Which of them the study's claims rest on (the endpoints: which pretext, at which fraction) is the
protocol's to say (protocol.yaml, study/protocol.py); the rest are described, not tested."""

from __future__ import annotations

PRIMARY = "test_f1_macro"  # test macro-F1 after the last epoch of the fixed budget: the compared metric
LABELS = {
    "test_f1_macro": "test macro-F1",
    "test_accuracy": "test accuracy",
    "test_precision_macro": "test macro precision",
    "test_recall_macro": "test macro recall",
    "val_f1_auc": "val macro-F1, area under curve (mean over epochs)",
    "probe_f1_macro": "linear probe test macro-F1",
    "probe_accuracy": "linear probe test accuracy",
    "knn_accuracy": "kNN (k 20) test accuracy",
}
SECONDARY = tuple(key for key in LABELS if key != PRIMARY)
