"""Run reports: ``report.html`` of one run folder, and a comparison page of several.

* :func:`write_run_report` (``recstack report RUN``, and the end of every ``recstack train``):
  one self-contained HTML file (images as data URIs, inline CSS, no script, nothing fetched)
  with the data summary, the config, the curves, the test metrics beside the published figures
  and the popularity baseline of the same split, sample recommendations and beyond-accuracy
  figures (catalogue coverage, popularity of what is recommended, the long tail).
* :func:`write_comparison` (``recstack report RUN_A RUN_B ...``): metrics side by side with
  differences, curves overlaid, config differences highlighted; :func:`comparison_table` is
  the same as text.

Building a report only reads the run folder (and writes report.html / plots/): it never
changes metrics.json or anything else the run computed.
"""

from .comparison import comparison_table, write_comparison
from .run_report import RunReport, build_run_report, write_run_report

__all__ = ["RunReport", "build_run_report", "comparison_table", "write_comparison", "write_run_report"]
