"""The workbook installed into the servers it serves.

``sglang``: ``install(backend)`` puts this project's one-launch fills into a live SGLang 0.5.23
``DeepseekSparseAttnBackend`` (or its multi-step draft backend), replacing the per-step
metadata methods on that instance; ``uninstall(backend)`` takes them out again.
"""
