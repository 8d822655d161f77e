"""Peers measured beside our stages: what a user would write in PyTorch, and SGLang's kernels."""
