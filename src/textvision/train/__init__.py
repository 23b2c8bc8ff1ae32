"""Stage 4, `train` and `baseline_logreg`: one backbone and seed trained on the images; the
logistic baseline."""
