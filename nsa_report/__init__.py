"""Report pipeline of the workbook: run the notebooks, merge their results, render pages.

Kept apart from ``nsa_kernels`` on purpose: importing it needs neither torch nor triton, so a
report can still be built (and a failure described) when the kernels package is broken.

- ``python -m nsa_report.run``: what ``./run_all.sh`` executes (notebooks -> report folder)
- ``python -m nsa_report.index DIR``: rebuild ``DIR/results.json`` and ``DIR/index.html``
- ``python -m nsa_report.compare A B``: what moved between two report folders
- ``python -m nsa_report.screenshots DIR``: every page of a report in headless Chromium
"""
