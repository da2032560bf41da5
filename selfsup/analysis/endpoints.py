"""What the study compares between the two inits, in one place: the primary endpoint, declared before any
run, and the secondary metrics, each with the words the reports use for it. `compare` tests every one per
fraction; the report (tools/report.py) tests the primary alone and Holm-corrects the rest as one family."""

from __future__ import annotations

PRIMARY = "best_f1_macro"  # test macro-F1 of the validation-selected epoch
PRIMARY_FRACTION = 0.1     # the claim is about scarce labels: the primary endpoint is the gain at 10 %
LABELS = {
    "best_f1_macro": "test macro-F1",
    "best_accuracy": "test accuracy",
    "best_precision_macro": "test macro precision",
    "best_recall_macro": "test macro recall",
    "val_f1_auc": "val macro-F1, area under curve (mean over epochs)",
    "probe_f1_macro": "linear probe test macro-F1",
    "probe_accuracy": "linear probe test accuracy",
}
SECONDARY = tuple(key for key in LABELS if key != PRIMARY)
