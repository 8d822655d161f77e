"""Measuring: workloads, the timing harness, results files. Kept apart from the kernels."""
