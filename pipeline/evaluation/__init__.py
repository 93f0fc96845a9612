"""Model evaluation: the candidate export and the served version on the eval split's raw rows.

What TFX's Evaluator (TFMA) does for a run, with scikit-learn's metric implementations:
metrics overall and per declared slice of the rows, the curves of the label kind, the blessing
(overall against the floor and the served version, and per slice against the served version on
the same rows), and the model report. Modules: ``slice_keys`` (each row's key per slice),
``scoring`` (``serving_default`` on raw rows), ``curves`` (ROC, precision-recall, calibration,
confusion matrices, residuals), ``slice_gate`` (the per-slice comparison), ``evaluator`` (the
``evaluate`` stage's work), ``plots`` and ``model_report`` (the HTML page).
"""
