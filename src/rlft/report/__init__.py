"""The run report: tables, plots and a self-contained HTML page built from a run directory's files.

matplotlib is imported only when a plot is drawn, so importing this package stays cheap.
"""

from rlft.report.html import write_report
from rlft.report.table import bucket_table, comparison_table
from rlft.report.traffic import replay_table, traffic_tables

__all__ = ["write_report", "comparison_table", "bucket_table", "replay_table", "traffic_tables"]
