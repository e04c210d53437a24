"""A digital twin: fit the simulator's engine model to a real endpoint (`agentload calibrate`)."""

from loadgen.twin.accuracy import ProbeRow, accuracy_rows, accuracy_text
from loadgen.twin.calibrate import Calibration, CalibrationSettings, calibrate
from loadgen.twin.fit import Estimate, LineFit, fit_line
from loadgen.twin.probe_requests import CalibrationRefused
from loadgen.twin.twin_file import twin_document, write_twin

__all__ = [
    "Calibration",
    "CalibrationRefused",
    "CalibrationSettings",
    "Estimate",
    "LineFit",
    "ProbeRow",
    "accuracy_rows",
    "accuracy_text",
    "calibrate",
    "fit_line",
    "twin_document",
    "write_twin",
]
