"""Loading profiles from YAML: built-in names or paths, with errors that name file, field, fix."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from loadgen.agents import Agent, resolve_agent
from loadgen.errors import ConfigError
from loadgen.profile.schema import Profile

__all__ = [
    "LoadedProfile",
    "ProfileError",
    "builtin_profiles",
    "load_profile",
    "portable_mapping",
    "profile_from_mapping",
]

_BUILTIN_PACKAGE = "loadgen.builtin_profiles"


class ProfileError(ConfigError):
    """A profile that cannot be used; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile, where it came from, and its resolved agent classes."""

    profile: Profile
    source: str
    agent_classes: tuple[type[Agent], ...]
    base_dir: Path = Path()  # where paths in the profile are relative to (its own folder)

    @property
    def trace_path(self) -> Path | None:
        """The trace a `mode: trace` arrival replays, resolved; None for other modes."""
        arrival = self.profile.arrival
        if arrival.mode != "trace" or not arrival.file:
            return None
        return self.base_dir / Path(arrival.file).expanduser()


def _builtin_dir() -> Traversable:
    try:
        return files(_BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        # A source checkout imported from its own folder: profiles/ sits beside loadgen/.
        return Path(__file__).resolve().parents[2] / "profiles"


def builtin_profiles() -> dict[str, str]:
    """Built-in profile names and their one-line descriptions."""
    found = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
            found[entry.name.removesuffix(".yaml")] = str(data.get("description", "")).strip()
    return found


def _text(path: Path, source: str) -> str:
    """A profile file's text: UTF-8 (YAML's encoding), or a ProfileError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(
            f"{source}: cannot read it ({exc.strerror or exc}); check the path and permissions"
        ) from exc
    try:
        return raw.decode("utf-8-sig")  # a BOM some editors write is not a field
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ProfileError(
            f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
            "save the profile as UTF-8"
        ) from exc


def _read(name_or_path: str) -> tuple[str, str, Path]:
    path = Path(name_or_path)
    try:
        is_path = path.suffix in (".yaml", ".yml") or path.exists()
        is_file = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for a path, a NUL byte
        shown = repr(name_or_path) if len(name_or_path) <= 60 else f"{name_or_path[:60]!r}..."
        raise ProfileError(
            f"{shown}: not a profile name or path ({exc.__class__.__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}); use a built-in name or a YAML path"
        ) from exc
    if is_path:
        if not is_file:
            raise ProfileError(f"{name_or_path}: no such profile file; check the path")
        return _text(path, str(path)), str(path), path.resolve().parent
    resource = _builtin_dir().joinpath(f"{name_or_path}.yaml")
    if not resource.is_file():
        names = ", ".join(builtin_profiles())
        raise ProfileError(
            f"unknown profile {name_or_path!r}: use a built-in name ({names}) or a YAML path"
        )
    return resource.read_text(encoding="utf-8"), f"builtin:{name_or_path}", Path.cwd()


def _describe(err: ErrorDetails, prefix: str = "") -> str:
    parts = [*(prefix.split(".") if prefix else []), *map(str, err["loc"])]
    where = ".".join(parts)
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field; remove it or check its spelling (see docs/profiles.md)"
    elif err["type"] == "missing":
        message = "required field is missing; add it"
    return f"{where or 'profile'}: {message}"


def load_profile(name_or_path: str, overrides: dict[str, Any] | None = None) -> LoadedProfile:
    """Load, merge top-level `overrides`, validate, and resolve agent kinds and params."""
    text, source, base_dir = _read(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ProfileError(
            f"{source}:{where} invalid YAML ({problem}); fix the syntax there"
        ) from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a YAML mapping (name:, agents:, arrival:...)")
    return profile_from_mapping(data, source, base_dir, overrides)


def profile_from_mapping(
    data: dict[str, Any],
    source: str,
    base_dir: Path,
    overrides: dict[str, Any] | None = None,
) -> LoadedProfile:
    """A profile from its mapping (as its YAML reads), `overrides` merged at the top level;
    `source` names it in errors, and relative paths in it count from `base_dir`."""
    data = dict(data)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{source}: {_describe(exc.errors()[0])}") from exc
    classes = []
    for i, mix in enumerate(profile.agents):
        try:
            cls = resolve_agent(mix.kind, base_dir)
        except ConfigError as exc:
            raise ProfileError(f"{source}: agents.{i}.kind: {exc}") from exc
        try:
            cls.Params.model_validate(mix.params)
        except ValidationError as exc:
            raise ProfileError(
                f"{source}: {_describe(exc.errors()[0], f'agents.{i}.params')}"
            ) from exc
        classes.append(cls)
    loaded = LoadedProfile(profile, source, tuple(classes), base_dir)
    trace = loaded.trace_path
    if trace is not None and not trace.is_file():
        raise ProfileError(
            f"{source}: arrival.file: no trace at {trace} (a relative path counts from the "
            "profile's folder); check the path"
        )
    return loaded


def portable_mapping(loaded: LoadedProfile) -> dict[str, Any]:
    """The validated profile as a mapping that loads the same from any folder (what a
    derived profile, written elsewhere, starts from)."""
    data = loaded.profile.model_dump(mode="json", exclude_unset=True)
    for entry in data.get("agents", []):
        params = entry.setdefault("params", {})
        for key in ("reasoning_effort", "thinking_budget"):
            if key in entry:  # the entry's own copy is the one the loader carries into params
                params.pop(key, None)
        file_part, colon, class_name = entry["kind"].rpartition(":")
        if colon and not Path(file_part).is_absolute():
            entry["kind"] = f"{(loaded.base_dir / file_part).resolve()}:{class_name}"
    arrival = data.get("arrival", {})
    if loaded.trace_path is not None:
        arrival["file"] = str(loaded.trace_path.resolve())
    return data
