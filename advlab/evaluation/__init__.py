"""Evaluation: defense reports, adversarial sets, records, the long evaluation jobs of the CLI, benchmarks.

  report           clean / grey-box / adaptive / sanity report of a purifier (advlab.evaluate re-exports it)
  adversarial_set  (model sha256, attack repr, subset) -> adversarial images: chunked, resumable, cached
  records          one json per (model or defense) x protocol under docs/results/records/
  jobs             resumable robust accuracy of a zoo model, and a zoo purifier's report with its throughput
  bench            attack cost against the forward+backward floor and torchattacks
"""
