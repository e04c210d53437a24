"""The self-contained HTML report: page, charts, SVG drawing and the ceiling's section."""

from loadgen.report.html.page import REPORT_FILE, render_report, write_report, write_report_of

__all__ = ["REPORT_FILE", "render_report", "write_report", "write_report_of"]
