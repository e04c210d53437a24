"""Recording real agent traffic, and exporting runs, as agentload traces.

`RecordProxy` is `agentload record`: a pass-through proxy in front of any OpenAI-compatible
server that writes each LLM call it relays as a trace line (loadgen/traces/formats/
agentload.py). `export_run` turns a run's steps.jsonl into the same format.
"""

from loadgen.record.export import export_run, run_trace
from loadgen.record.proxy import RecordProxy
from loadgen.record.recorder import DEFAULT_SESSION_HEADERS, Recorder, RecordStats

__all__ = [
    "DEFAULT_SESSION_HEADERS",
    "RecordProxy",
    "RecordStats",
    "Recorder",
    "export_run",
    "run_trace",
]
