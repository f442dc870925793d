"""Evaluation: defense reports, the long evaluation jobs of the CLI, benchmarks.

  report   clean / grey-box / adaptive / sanity report of a purifier (advlab.evaluate re-exports it)
  jobs     resumable robust accuracy of a zoo model, and a zoo purifier's report with its throughput
  bench    attack cost against the forward+backward floor and torchattacks
"""
