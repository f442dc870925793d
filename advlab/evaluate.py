"""Accuracy, robust accuracy and defense reports, in one namespace for notebooks and scripts.

A robust accuracy is never reported without the attack that produced it: `robust_accuracy`
returns a float, `robust_report` a dict that names the attack and its settings. The code lives in
advlab.metrics (measurements) and advlab.evaluation.report (defense reports).
"""
from advlab.evaluation.report import (SANITY_EPS, defense_report, format_report, report_rows,  # noqa: F401
                                      save_report)
from advlab.metrics import accuracy, predict, robust_accuracy, robust_report  # noqa: F401

__all__ = ["predict", "accuracy", "robust_accuracy", "robust_report", "SANITY_EPS", "defense_report",
           "report_rows", "format_report", "save_report"]
