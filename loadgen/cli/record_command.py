"""`agentload record` (a recording proxy) and `agentload export-trace` (a run as a trace)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import re
import signal
import sys
from pathlib import Path
from typing import Any

from loadgen.cli.arguments import parse_count
from loadgen.errors import UsageError
from loadgen.event_loop import run_main

__all__ = ["parse_listen", "register"]

_RECORD_EXAMPLES = """\
examples:
  agentload record --upstream http://gpu-box:8000/v1 --out trace.jsonl
      then point any OpenAI-compatible client at http://127.0.0.1:8080/v1
  agentload record --listen 127.0.0.1:9000 --upstream https://api.openai.com/v1 \\
      --out codex.jsonl --session-header session_id
  agentload replay trace.jsonl --target http://gpu-box:8000/v1 --speedup 4

Every request is relayed untouched (streams chunk by chunk); each chat, completions and
responses call becomes one trace line: session, arrival time, think/tool gap, input,
output and cached tokens, time to first token, duration and the hash ids of the prompt's
blocks. No prompt or reply text is written unless --keep-text; keys and session header
values never are. Sessions: the first session header present (default: {headers}), else
the body's `user`, else a prompt that extends an earlier call's prompt. Ctrl-C stops it
with every finished call written. See docs/traces.md (Recording).
"""

_EXPORT_EXAMPLES = """\
examples:
  agentload export-trace results/nightly                 writes results/nightly/trace.jsonl
  agentload export-trace results/nightly --out synthetic.jsonl

Each step with a usable reply becomes a trace request (sub-agents under their parent); the
prompt's hash ids are synthesized as a prefix chain per session (steps keep no text). See
docs/traces.md (Recording).
"""

_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):?(?P<port>\d+)$")


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, :PORT or PORT (the host then 127.0.0.1); port 0 picks one."""
    match = _LISTEN.match(text.strip())
    port = int(match.group("port")) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid address {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks one)"
        )
    host = match.group("v6") or match.group("host") or "127.0.0.1"
    return host, port


def register(commands: Any) -> None:
    """Add the `record` and `export-trace` subcommands."""
    from loadgen.record import DEFAULT_SESSION_HEADERS

    p = commands.add_parser(
        "record",
        help="record real traffic as a trace: a pass-through proxy in front of a server",
        description="Serve a pass-through proxy in front of an OpenAI-compatible server and "
        "write every LLM call it relays as a line of an agentload trace.",
        epilog=_RECORD_EXAMPLES.format(headers=", ".join(DEFAULT_SESSION_HEADERS)),
    )
    p.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="where clients connect (default 127.0.0.1:8080; port 0 picks one)",
    )
    p.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="the server's base URL, e.g. http://localhost:8000/v1",
    )
    p.add_argument("--out", required=True, metavar="TRACE", help="the trace file to write")
    p.add_argument(
        "--block-size",
        type=parse_count,
        default=64,
        metavar="N",
        help="tokens per hashed prompt block (default 64)",
    )
    p.add_argument(
        "--keep-text",
        action="store_true",
        help="also write each prompt and reply's text into the trace (off by default)",
    )
    p.add_argument(
        "--session-header",
        action="append",
        metavar="NAME",
        help="a request header naming the session (repeatable; replaces the defaults)",
    )
    p.set_defaults(handler=record)

    e = commands.add_parser(
        "export-trace",
        help="write a run's steps as an agentload trace (to replay or compare)",
        description="Turn a results folder's steps.jsonl into an agentload trace.",
        epilog=_EXPORT_EXAMPLES,
    )
    e.add_argument("dir", metavar="DIR", help="results folder of `agentload run`")
    e.add_argument("--out", metavar="TRACE", help="where to write it (default DIR/trace.jsonl)")
    e.add_argument(
        "--block-size",
        type=parse_count,
        default=64,
        metavar="N",
        help="tokens per synthesized prompt block (default 64)",
    )
    e.set_defaults(handler=export_trace)


def export_trace(args: argparse.Namespace) -> int:
    """Write the trace of a results folder."""
    from loadgen.record import export_run

    if not Path(args.dir).is_dir():
        raise UsageError(f"{args.dir}: no such results folder")
    out = args.out or str(Path(args.dir) / "trace.jsonl")
    trace = export_run(args.dir, out, args.block_size)
    subagents = sum(1 for _ in _subagents(trace.sessions))
    print(
        f"agentload export-trace: wrote {trace.request_count()} requests of "
        f"{len(trace.sessions)} sessions and {subagents} sub-agents to {out}"
    )
    return 0


def _subagents(sessions: Any) -> Any:
    for session in sessions:
        for _after, sub in session.subagents:
            yield sub
            yield from _subagents([sub])


def record(args: argparse.Namespace) -> int:
    """Proxy and record until interrupted."""
    from loadgen.record import DEFAULT_SESSION_HEADERS, RecordProxy

    host, port = args.listen
    names = args.session_header or list(DEFAULT_SESSION_HEADERS)
    for name in names:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise UsageError(f"--session-header {name!r}: not an HTTP header name")
    proxy = RecordProxy(
        args.upstream,
        args.out,
        host=host,
        port=port,
        block_size=args.block_size,
        keep_text=args.keep_text,
        session_headers=names,
    )
    run_main(_serve(proxy))
    return 0


async def _serve(proxy: Any) -> None:
    # The collector's older-generation passes walked everything imported at start-up, some
    # milliseconds now and then in the middle of a relayed request: start-up's objects are
    # frozen out of them (as `agentload sim` does).
    gc.freeze()
    try:
        await proxy.start()
    except OSError as exc:
        await proxy.stop()
        where = f"{proxy.host}:{proxy.port}"
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--listen {where}: address in use; pick another port") from exc
        raise UsageError(f"--listen {where}: cannot listen ({exc.strerror or exc})") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    text = ", with prompt and reply text" if proxy.keep_text else ""
    print(
        f"agentload record: listening on {proxy.base_url} -> {proxy.upstream}; writing "
        f"{proxy.out}{text} (point clients at {proxy.base_url}; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await proxy.stop()
    _report(proxy)


def _report(proxy: Any) -> None:
    stats = proxy.recorder.stats
    sessions = len(proxy.recorder.sessions)
    line = f"agentload record: wrote {stats.recorded} calls in {sessions} sessions to {proxy.out}"
    skipped = {
        "refused by the upstream": stats.refused,
        "upstream unreachable": stats.unreachable,
        "unfinished": stats.unfinished,
        "not JSON": stats.unreadable,
    }
    if stats.skipped():
        line += " (not recorded: " + ", ".join(f"{n} {w}" for w, n in skipped.items() if n) + ")"
    if stats.counted:
        line += f"; {stats.counted} without usage from the upstream: tokens counted here"
    if proxy.recorder.writer.error:
        line += f"; writing stopped: {proxy.recorder.writer.error}"
    print(line, file=sys.stderr, flush=True)
