"""Real inference servers for tests: where they are installed, tiny models, and processes.

`.ci/install-real-servers` installs llama.cpp's llama-server, the LiteLLM proxy and
`transformers serve` into a cache outside the clone (CI clones afresh on the same machine, so
only an outside cache is ever warm). The versions below name the cache folders and must match
that script's. Tests call `require(...)` first: a developer without the servers gets a skip
that says how to install them, while CI (the CI environment variable set) fails instead,
because a CI run that silently skipped the real servers would prove nothing about them.

Each server class is a context manager, plain (`with`) for sync fixtures and async
(`async with`, starting in a thread so the event loop keeps serving in-process simulators
that a proxy may call). A server binds 127.0.0.1 port 0 and logs the port it got (read back,
so there is no race for a port found free) to a file that `log_text()` reads; it is ready
once its health endpoint answers 200, and is always stopped within a bounded time: SIGTERM
to its process group, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

import gguf
import numpy as np
import pytest
import yaml

INSTALL_SCRIPT = ".ci/install-real-servers"
LLAMA_BUILD = 11434
LITELLM_VERSION = "1.82.6"
TRANSFORMERS_VERSION = "5.17.0"

ServerName = Literal["llama-server", "litellm", "transformers"]


# --- where the installed servers are -------------------------------------------------------


def cache_dir() -> Path:
    """The install cache: $AGENTLOAD_SERVERS_CACHE, else ~/.cache/agentload."""
    configured = os.environ.get("AGENTLOAD_SERVERS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "agentload"


def llama_server_path() -> Path:
    """The llama-server executable (build b11434, CPU)."""
    return cache_dir() / f"llama-server-b{LLAMA_BUILD}" / "llama-server"


def litellm_path() -> Path:
    """The `litellm` proxy CLI inside its own pinned venv."""
    return cache_dir() / f"litellm-{LITELLM_VERSION}" / "venv" / "bin" / "litellm"


def transformers_serve_python() -> Path:
    """The Python of the venv with CPU torch and transformers[serving]."""
    return cache_dir() / f"transformers-serve-{TRANSFORMERS_VERSION}" / "venv" / "bin" / "python"


def transformers_path() -> Path:
    """The `transformers` CLI (`transformers serve`) next to that Python."""
    return transformers_serve_python().with_name("transformers")


def installed(server: ServerName) -> Path | None:
    """The server's executable when completely installed, else None."""
    if server == "llama-server":
        path = llama_server_path()
        return path if os.access(path, os.X_OK) else None
    # The venvs count only with the install script's marker, written after its checks (for
    # LiteLLM: no *litellm*.pth in site-packages), so a half-finished install is not used.
    path = litellm_path() if server == "litellm" else transformers_path()
    marker = path.parents[2] / ".installed"
    return path if marker.is_file() and os.access(path, os.X_OK) else None


def require(server: ServerName) -> Path:
    """The server's executable; skips the test when it is missing, or fails it under CI."""
    path = installed(server)
    if path is not None and server == "litellm":
        # Re-checked at every use, not only at install: the compromised releases' .pth runs
        # at every interpreter start, so a venv that has one must never be started.
        venv = path.parents[1]
        if any(venv.glob("lib/python*/site-packages/*litellm*.pth")):
            pytest.fail(f"refusing {venv}: a *litellm*.pth is in its site-packages", pytrace=False)
    if path is not None:
        return path
    message = f"{server} is not installed in {cache_dir()}: run {INSTALL_SCRIPT}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this fails rather than skips)", pytrace=False)
    pytest.skip(message)


# --- a tiny GGUF model -----------------------------------------------------------------------

# SentencePiece writes a word's leading space as this mark.
_SPACE = "\u2581"
_WORD_TEXT = (
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find hello world tool weather city agent load test server model token"
)
_WORDS = _WORD_TEXT.split()

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5-Instruct's template (with a shorter default system prompt): llama-server recognises
# the `<tool_call>` format from it and parses such output into OpenAI tool_calls.
_QWEN_TOOLS_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\
\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \
\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) \
or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Small enough to load in well under a second and decode hundreds of tokens a second on two
# cores; big enough (4 heads, grouped KV) to exercise llama.cpp's real attention path.
_N_EMBD = 64
_N_HEAD = 4
_N_HEAD_KV = 2
_N_FF = 128
_N_LAYER = 2
_CONTEXT = 32768


_F32 = np.ndarray[Any, np.dtype[np.float32]]


class _Vocab(NamedTuple):
    tokens: list[str]
    scores: list[float]
    types: list[gguf.TokenType]
    eos: int
    emitted: list[int]  # ids the output layer can pick; the rest get all-zero logits


def _vocab(tool_calls: bool) -> _Vocab:
    tokens: list[str] = []
    scores: list[float] = []
    types: list[gguf.TokenType] = []

    def add(piece: str, score: float, kind: gguf.TokenType) -> int:
        tokens.append(piece)
        scores.append(score)
        types.append(kind)
        return len(tokens) - 1

    add("<unk>", 0.0, gguf.TokenType.UNKNOWN)
    add("<s>", 0.0, gguf.TokenType.CONTROL)
    add("</s>", 0.0, gguf.TokenType.CONTROL)
    add("<|im_start|>", 0.0, gguf.TokenType.CONTROL)
    eos = add("<|im_end|>", 0.0, gguf.TokenType.CONTROL)
    emitted = [eos]
    if tool_calls:
        # User-defined, not control: control tokens are left out of the text llama-server
        # parses, so the tool-call parser would never see them.
        emitted += [
            add("<tool_call>", 0.0, gguf.TokenType.USER_DEFINED),
            add("</tool_call>", 0.0, gguf.TokenType.USER_DEFINED),
        ]
    # Byte fallback: any text tokenizes, whatever the vocabulary lacks.
    for byte in range(256):
        add(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE)
    # SentencePiece merges adjacent symbols only into pieces in the vocabulary, so each word
    # comes with all its prefixes; longer pieces score higher and merge first.
    pieces = [_SPACE, *(chr(c) for c in range(0x21, 0x7F))]
    pieces += [(_SPACE + w)[:n] for w in _WORDS for n in range(2, len(w) + 2)]
    for piece in dict.fromkeys(pieces):
        emitted.append(add(piece, float(len(piece)), gguf.TokenType.NORMAL))
    return _Vocab(tokens, scores, types, eos, emitted)


# The tool-call model's designed next-token preferences, best first: after the prompt's
# final newline it opens `<tool_call>`, and wherever the tool-call grammar leaves a choice the
# best allowed preference closes the call as soon as it may. Forced through llama-server's
# grammar this writes `<tool_call>\n{"name":"get_weather","arguments":{"city":":"}}</tool_call>`
# (string arguments get the value ":"), then the end token.
_TOOL_CALL_STEPS: dict[str, tuple[str, ...]] = {
    "<0x0A>": ("<tool_call>", "{"),
    "<tool_call>": ("<0x0A>",),
    "{": ('"',),
    '"': (":", ",", "}"),
    ":": ('"', "{"),
    ",": ('"',),
    "}": ("}", "</tool_call>"),
    "</tool_call>": ("<|im_end|>",),
}
_STEP_LOGITS = (30.0, 22.5, 15.0)  # far above the random logits' spread (sd 2)


def write_tiny_gguf(
    path: Path,
    *,
    tool_calls: bool = False,
    seed: int = 0,
    n_embd: int | None = None,
    n_layer: int | None = None,
    n_ff: int | None = None,
) -> Path:
    """Write a tiny random-weight Llama GGUF that llama-server loads in well under a second.

    It has a SentencePiece-style vocabulary of ~600 pieces with byte fallback and a ChatML
    template. Replies are random text of ASCII pieces and words (byte and control tokens
    other than the end token are never sampled, so replies are valid UTF-8), ended by the
    end token now and then or by max_tokens.

    With `tool_calls`: a Qwen2.5-style template with `<tool_call>` tokens, which llama-server
    turns into a grammar-constrained tool-call format, and a model that always calls a tool:
    greedy or sampled, with tools offered, every reply is one call of a tool llama-server
    parses into `tool_calls` (finish_reason "tool_calls"), in about 50 tokens; string
    arguments get ":". Without tools in the request the same attempt comes back as text.

    `n_embd`, `n_layer`, `n_ff` (hidden size, layers, FFN size) make a larger model where
    the engine, not HTTP, should set the timings (bench/twin_vs_llama_server.py); by default
    the tiny sizes above.

    Same arguments, same bytes.
    """
    n_embd, n_layer, n_ff = (n_embd or _N_EMBD, n_layer or _N_LAYER, n_ff or _N_FF)
    vocab = _vocab(tool_calls)
    n_vocab = len(vocab.tokens)
    head_dim = n_embd // _N_HEAD
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int, scale: float = 1.0) -> _F32:
        # numpy's (rows, cols) is ggml's [cols, rows]: llama.cpp's layouts are row-major.
        scaled: _F32 = rng.standard_normal((rows, cols), np.float32) * np.float32(
            scale / np.sqrt(cols)
        )
        return scaled

    def ones(n: int) -> _F32:
        return np.ones(n, dtype=np.float32)

    embeddings = rng.standard_normal((n_vocab, n_embd), np.float32)
    # Logits of a few units' spread: sampling varies, yet the >40 emitted pieces with high
    # logits keep the zero-logit byte and control tokens out of any default top-k.
    output = np.zeros((n_vocab, n_embd), dtype=np.float32)
    output[vocab.emitted] = rng.standard_normal((len(vocab.emitted), n_embd), np.float32) / 4
    ids = {piece: i for i, piece in enumerate(vocab.tokens)}
    if tool_calls:
        # Attention and MLP only nudge the residual stream (their outputs are scaled down
        # below), so the final hidden state is about the current token's normalised
        # embedding: an output row aligned with it sets that token's successor logits.
        # Orthonormal embeddings for the steering tokens keep their preferences apart.
        steering = [ids[piece] for piece in _TOOL_CALL_STEPS]
        basis, _ = np.linalg.qr(rng.standard_normal((n_embd, len(steering))))
        embeddings[steering] = (basis.T * np.sqrt(n_embd)).astype(np.float32)
        for piece, successors in _TOOL_CALL_STEPS.items():
            direction = embeddings[ids[piece]] / n_embd  # · normalised embedding = 1
            for logit, successor in zip(_STEP_LOGITS, successors, strict=False):
                output[ids[successor]] += logit * direction
    # Where a grammar forces a character, llama.cpp may pick its byte-fallback token (logit 0)
    # over the ordinary piece: both get one embedding, so what follows does not depend on it.
    for code in range(0x21, 0x7F):
        embeddings[ids[f"<0x{code:02X}>"]] = embeddings[ids[chr(code)]]
    residual_scale = 0.1 if tool_calls else 1.0

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("agentload-tiny")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD_KV)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(vocab.eos)
    # ChatML prompts carry their own markers; a BOS in front would only shift the cache.
    writer.add_add_bos_token(False)
    # SentencePiece's habit of a space before the first word (and after every special token)
    # would make "<|im_start|>assistant" read back as "<|im_start|> assistant": the grammar
    # that forces a tool call starts from the template's own text and rejects that.
    writer.add_add_space_prefix(False)
    writer.add_chat_template(_QWEN_TOOLS_TEMPLATE if tool_calls else _CHATML_TEMPLATE)

    writer.add_tensor("token_embd.weight", embeddings)
    for layer in range(n_layer):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones(n_embd))
        writer.add_tensor(f"{blk}.attn_q.weight", weight(_N_HEAD * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(_N_HEAD_KV * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(_N_HEAD_KV * head_dim, n_embd))
        writer.add_tensor(
            f"{blk}.attn_output.weight", weight(n_embd, _N_HEAD * head_dim, residual_scale)
        )
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones(n_embd))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(n_embd, n_ff, residual_scale))
    writer.add_tensor("output_norm.weight", ones(n_embd))
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- server processes ------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """The server exited or never became healthy; the message ends with its log's tail."""


class _ServerProcess:
    """One server subprocess on a loopback port, logging to a file; started once, always stopped.

    Every server here binds port 0 itself and logs the port it got, which start() reads back:
    no window in which another process (tests run two at a time) takes a port found free.
    """

    name = "server"
    health_path = "/health"
    port_line: re.Pattern[str]  # the log line naming the bound port, as group 1

    def __init__(self, *, log_dir: Path | None, start_timeout_s: float) -> None:
        self.start_timeout_s = start_timeout_s
        # Without a log_dir the log lives in a temporary folder removed on stop; its text is
        # kept in memory first, so log_text() still answers after the server is gone.
        self._own_dir = log_dir is None
        self._dir = Path(tempfile.mkdtemp(prefix="agentload-")) if log_dir is None else log_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        # A name of its own: several servers of a kind may share one log_dir.
        handle, log_name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=self._dir)
        os.close(handle)
        self.log_path = Path(log_name)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None

    # Subclasses say how to run the server on a port, and in which environment.
    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def root_url(self) -> str:
        """http://127.0.0.1:PORT (health, metrics)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, http://127.0.0.1:PORT/v1."""
        return f"{self.root_url}/v1"

    def log_text(self) -> str:
        """Everything the server has logged so far (stdout and stderr)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def start(self) -> Self:
        """Start the server and wait until it is healthy; raises ServerStartError if not."""
        if self._process is not None or self._final_log is not None:
            raise RuntimeError(f"{self.name} is started once per instance")
        with self.log_path.open("wb") as log:
            # The child holds its own copy of the descriptor; ours can close at once.
            self._process = subprocess.Popen(
                self._command(0),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                # Its own process group, so stop() also reaches any workers it forks.
                start_new_session=True,
            )
        try:
            self._wait_healthy(self._process)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {process.returncode} while starting;"
                    f" log tail:\n{self._log_tail()}"
                )
            if self.port == 0:
                found = self.port_line.search(self.log_text())
                if found is None:
                    time.sleep(0.05)
                    continue
                self.port = int(found.group(1))
            try:
                with urllib.request.urlopen(self.root_url + self.health_path, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass  # not answering yet, or still loading (llama-server answers 503)
            time.sleep(0.1)
        raise ServerStartError(
            f"{self.name} not healthy (port {self.port or 'not yet logged'}) after"
            f" {self.start_timeout_s:.0f} s; log tail:\n{self._log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None and process.poll() is None:
            raise RuntimeError(f"{self.name} (pid {process.pid}) survived SIGKILL")
        if self._own_dir and self._final_log is None:
            self._final_log = self.log_text()
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # In a thread: the event loop keeps running, e.g. an in-process simulator that the
        # starting server may already call.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


class LlamaServer(_ServerProcess):
    """llama.cpp's llama-server on a GGUF model (see write_tiny_gguf), CPU, one thread.

    One thread: llama.cpp's threads spin at their barriers, and two of them on this machine's
    two cores, shared with the other test worker, stalled each other for hundreds of ms per
    token whenever anything else ran (CI saw 6-8 requests in 25 s where 100 is usual).

    Each of the `parallel` slots gets ctx/parallel tokens of context. `extra_args` go last,
    e.g. ("--cache-ram", "0") or ("--no-cache-prompt",) to turn prompt caching off.
    """

    name = "llama-server"
    port_line = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")

    def __init__(
        self,
        model_path: Path,
        *,
        model: str = "tiny-llama",
        ctx: int = 8192,
        parallel: int = 4,
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        # Before anything is created: a missing server skips (or fails) the test here.
        self.executable = require("llama-server")
        super().__init__(log_dir=log_dir, start_timeout_s=start_timeout_s)
        self.model_path = model_path
        self.model = model
        self.ctx = ctx
        self.parallel = parallel
        self.extra_args = tuple(extra_args)

    def _command(self, port: int) -> list[str]:
        return [
            str(self.executable),
            "--model", str(self.model_path),
            "--alias", self.model,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--ctx-size", str(self.ctx),
            "--parallel", str(self.parallel),
            "--threads", "1",
            "--metrics",
            "--no-webui",
            *self.extra_args,
        ]  # fmt: skip


# uvicorn binds port 0 itself and logs the port it got.
_UVICORN_PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Backend(NamedTuple):
    """One upstream of a LiteLLM model group: its OpenAI base URL (…/v1) and model name."""

    base_url: str
    model: str


class LiteLLMProxy(_ServerProcess):
    """The LiteLLM proxy with one model group, `model`, load-balancing over `backends`.

    `router_settings` go into the config as they are (e.g. {"routing_strategy":
    "least-busy"}); `extra_config` adds or replaces top-level config sections;
    `deployment_params` go into every deployment's litellm_params.
    """

    name = "litellm"
    health_path = "/health/liveliness"
    port_line = _UVICORN_PORT

    def __init__(
        self,
        backends: Sequence[Backend | tuple[str, str]],
        *,
        model: str = "agentload-proxy",
        router_settings: Mapping[str, Any] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        deployment_params: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
        start_timeout_s: float = 90.0,
    ) -> None:
        # Before anything is created: a missing server skips (or fails) the test here.
        self.executable = require("litellm")
        self.extra_args = tuple(extra_args)  # e.g. ("--keepalive_timeout", "1")
        super().__init__(log_dir=log_dir, start_timeout_s=start_timeout_s)
        self.backends = [Backend(*backend) for backend in backends]
        self.model = model
        self.config_path = self.log_path.with_suffix(".yaml")
        config: dict[str, Any] = {
            "model_list": [
                {
                    "model_name": model,
                    "litellm_params": {
                        "model": f"openai/{backend.model}",
                        "api_base": backend.base_url,
                        "api_key": "none",
                        **(deployment_params or {}),
                    },
                }
                for backend in self.backends
            ],
        }
        if router_settings:
            config["router_settings"] = dict(router_settings)
        config.update(extra_config or {})
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _command(self, port: int) -> list[str]:
        return [
            str(self.executable),
            "--config", str(self.config_path),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--num_workers", "1",
            *self.extra_args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            # The bundled model cost map instead of fetching the latest from GitHub at start.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
            # Upstreams are loopback; a proxy setting from the environment must not reroute.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }


# --- transformers serve ----------------------------------------------------------------------

# Run by the transformers venv's Python (torch lives only there). Arguments: one JSON object.
_WRITE_HF_LLAMA = """
import json, sys
from pathlib import Path
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

args = json.loads(sys.argv[1])
out = Path(args["out"])
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=512,
    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes
    show_progress=False,
)
words = args["words"]
tokenizer.train_from_iterator([" ".join(words[i:] + words[:i]) for i in range(len(words))], trainer)
fast = PreTrainedTokenizerFast(
    tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
)
fast.chat_template = args["chat_template"]
fast.save_pretrained(out)
torch.manual_seed(args["seed"])
config = LlamaConfig(
    vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=args["context"],
    bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
    pad_token_id=fast.pad_token_id, tie_word_embeddings=False,
)
model = LlamaForCausalLM(config)
# Random weights pick any byte, and lone bytes are not UTF-8: only tokens that decode to
# printable ASCII (or the end token) may be generated.
model.generation_config.suppress_tokens = [
    i for i in range(len(fast))
    if i != fast.eos_token_id
    and not all(32 <= ord(c) < 127 or c == "\\n" for c in fast.decode([i]))
]
model.save_pretrained(out)
"""


def write_tiny_hf_llama(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny random-weight HF Llama with a locally trained byte-level BPE tokenizer.

    The same shape as write_tiny_gguf's model (2 layers, hidden size 64), a ChatML template,
    and generation limited to printable ASCII tokens and the end token (greedy by default, so
    a prompt's reply is always the same). Runs in the transformers venv, which it requires.
    """
    require("transformers")
    python = transformers_serve_python()
    args = {
        "out": str(directory),
        "seed": seed,
        "context": _CONTEXT,
        "words": _WORDS,
        "chat_template": _CHATML_TEMPLATE,
    }
    result = subprocess.run(
        [str(python), "-c", _WRITE_HF_LLAMA, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"writing the HF model failed:\n{result.stdout}{result.stderr}")
    return directory


class TransformersServe(_ServerProcess):
    """`transformers serve` on CPU, pinned to one local model directory (write_tiny_hf_llama).

    Requests must name the model by its directory path (`model`); any other name is a 400.
    """

    name = "transformers-serve"
    port_line = _UVICORN_PORT

    def __init__(
        self,
        model_dir: Path,
        *,
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        # Before anything is created: a missing server skips (or fails) the test here.
        self.executable = require("transformers")
        super().__init__(log_dir=log_dir, start_timeout_s=start_timeout_s)
        self.model_dir = model_dir
        self.model = str(model_dir)
        self.extra_args = tuple(extra_args)
        # Its own empty Hugging Face home: nothing is looked up in (or written to) the user's
        # cache, and /v1/models lists nothing instead of failing on a missing hub folder.
        self._hf_home = self._dir / "hf-home"
        (self._hf_home / "hub").mkdir(parents=True, exist_ok=True)

    def _command(self, port: int) -> list[str]:
        return [
            str(self.executable), "serve",
            "--device", "cpu",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--log-level", "info",  # the port line comes from uvicorn's info log
            *self.extra_args,
            str(self.model_dir),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HF_HOME": str(self._hf_home),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }


class SimProcess(_ServerProcess):
    """`agentload sim` as its own process: a backend for a gateway, or a target for the CLI.

    With `config`: `agentload sim --config FILE` (a twin), the file's own preset its base."""

    name = "agentload-sim"
    health_path = "/health"
    port_line = re.compile(r"on http://127\.0\.0\.1:(\d+)/v1")

    def __init__(
        self,
        *,
        preset: str = "fast",
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
        start_timeout_s: float = 60.0,
        config: Path | None = None,
    ) -> None:
        super().__init__(log_dir=log_dir, start_timeout_s=start_timeout_s)
        self.model = "agentload-sim"
        self.preset = preset
        self.extra_args = tuple(extra_args)
        self.config = config

    def _command(self, port: int) -> list[str]:
        # A config file names its own preset; --preset would replace it.
        base = ["--config", str(self.config)] if self.config else ["--preset", self.preset]
        return [sys.executable, "-m", "loadgen", "sim", "--port", str(port),
                *base, *self.extra_args]  # fmt: skip
