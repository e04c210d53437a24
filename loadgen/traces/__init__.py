"""Traces of real agent traffic: one model, loaders per published format, replay's inputs."""

from loadgen.traces.formats import FORMATS, load_trace
from loadgen.traces.model import HashScope, Trace, TraceRequest, TraceSession

__all__ = ["FORMATS", "HashScope", "Trace", "TraceRequest", "TraceSession", "load_trace"]
