"""The EM driver: warm start, rounds of E-step + M-step, raw-data baselines, evaluation, report."""
