"""Run settings from three layers: command-line flags > ``BULKTAG_*`` variables > TOML file.

Pure: the CLI reads argv, the environment and the file, and hands the values here. Every
setting is declared once in :data:`OPTIONS` (name, type, default, limits); the flag, the
variable (``BULKTAG_<NAME>``) and the TOML key (``<name>``) all derive from it, and
``config/bulktag.example.toml`` documents them. A bad value raises :class:`ConfigError` with
one line naming where it came from.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bulktag.errors import BulktagError
from bulktag.source import IMS_CHARSETS, IMS_MAX_KEY_LENGTH, IMS_MAX_VALUE_LENGTH


class ConfigError(BulktagError):
    """A bad flag, variable or config file value. The CLI prints it and exits 2."""


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``6h`` or ``1h30m``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"expected a duration like 90, 90s, 30m, 6h or 1h30m, got {value!r}")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    kind: type[Any]
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # extra variables read besides BULKTAG_<NAME> (OS_* conventions)
    parse: Callable[[Any], Any] | None = None  # turns any layer's raw value into ``kind``

    @property
    def env_names(self) -> tuple[str, ...]:
        return ("BULKTAG_" + self.name.upper(), *self.env)


OPTIONS: tuple[Option, ...] = (
    Option("results", str, "bulktag-results.jsonl"),
    Option("endpoint", str, None, env=("OS_IMAGE_URL",)),
    Option("rate", float, 10.0, minimum=0.001),
    Option("burst", int, None, minimum=1),  # None: auto, see default_burst()
    Option("concurrency", int, 16, minimum=1, maximum=4096),
    Option("max_attempts", int, 8, minimum=1),
    Option("timeout", float, 30.0, minimum=0.1),
    Option("max_consecutive_failures", int, 100, minimum=0),
    Option("grace_period", float, 10.0, minimum=0),
    Option("fsync_interval", float, 1.0, minimum=0),
    Option("progress_interval", float, 30.0, minimum=1),
    Option("cacert", str, None, env=("OS_CACERT",)),
    Option("insecure", bool, False),
    Option("log_format", str, "auto", choices=("auto", "console", "json")),
    Option("log_level", str, "info", choices=("debug", "info", "warning", "error")),
    # json: one JSON document on stdout at the end (exit code, counts), for wrapper scripts.
    Option("summary", str, "text", choices=("text", "json")),
    Option("op", str, "add", choices=("add", "remove")),
    Option("retry_failed", bool, False),
    Option("shard", str, "0/1"),
    # 0: no limit, as timeout(1) and rclone read it: a one-off run can lift the limit a
    # config file or BULKTAG_MAX_DURATION sets, which no flag could otherwise unset.
    Option("max_duration", float, None, minimum=0, parse=parse_duration),
    Option("max_items", int, None, minimum=1),
    # Stop (exit 75, resumable) once the cloud has accepted nothing for this long; 0: never.
    Option("max_outage", float, 300.0, minimum=0, parse=parse_duration),
    Option("lock_wait", float, 0.0, minimum=0, parse=parse_duration),
    Option("metrics_file", str, None),
    # Rows failed or invalid in an earlier run (skipped now) count as done for the exit code.
    Option("accept_earlier_failures", bool, False),
    Option("api", str, "glance", choices=("glance", "ims")),
    Option("project_id", str, None),  # IMS: default, the project the token is scoped to
    # IMS limits (API reference "Image Tag Format", ims_03_0902; see bulktag/source.py for
    # where the pages disagree) and IMS's ten tags per image (ims_03_0617), hence per call.
    Option("ims_max_key_length", int, IMS_MAX_KEY_LENGTH, minimum=1),
    Option("ims_max_value_length", int, IMS_MAX_VALUE_LENGTH, minimum=0),
    Option("ims_charset", str, "strict", choices=IMS_CHARSETS),
    Option("ims_tags_per_call", int, 10, minimum=1, maximum=10),
    Option("batch_linger", float, 0.05, minimum=0, maximum=10),
    Option("ims_read_ahead", int, 200_000, minimum=1),  # rows held to group an image's tags
)
BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    results: str
    endpoint: str | None
    rate: float
    burst: int | None
    concurrency: int
    max_attempts: int
    timeout: float
    max_consecutive_failures: int
    grace_period: float
    fsync_interval: float
    progress_interval: float
    cacert: str | None
    insecure: bool
    log_format: str
    log_level: str
    summary: str
    op: str
    retry_failed: bool
    shard: str
    max_duration: float | None
    max_items: int | None
    max_outage: float
    lock_wait: float
    metrics_file: str | None
    accept_earlier_failures: bool
    api: str
    project_id: str | None
    ims_max_key_length: int
    ims_max_value_length: int
    ims_charset: str
    ims_tags_per_call: int
    batch_linger: float
    ims_read_ahead: int


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _from_text(option: Option, text: str) -> Any:
    """Environment values are text: turn one into the option's type."""
    if option.parse is not None:
        return option.parse(text)
    if option.kind is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError(f"expected true or false, got {text!r}")
    try:
        if option.kind is int:
            return int(text)
        if option.kind is float:
            return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    return text


def _check(option: Option, value: Any) -> Any:
    """Type and range check; returns the value, converted where lossless (int → float)."""
    if option.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, option.kind) or (option.kind is int and isinstance(value, bool)):
        raise ValueError(f"expected {option.kind.__name__}, got {value!r}")
    if option.choices and value not in option.choices:
        raise ValueError(f"expected one of {', '.join(option.choices)}, got {value!r}")
    if option.minimum is not None and value < option.minimum:
        raise ValueError(f"must be at least {option.minimum:g}, got {value!r}")
    if option.maximum is not None and value > option.maximum:
        raise ValueError(f"must be at most {option.maximum:g}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # nan passes the checks above
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


def _layer(
    where: Callable[[Option], str], values: Mapping[Option, Any], convert: bool
) -> dict[str, Any]:
    checked = {}
    for option, raw in values.items():
        try:
            if convert:
                value = _from_text(option, raw)
            else:
                value = option.parse(raw) if option.parse is not None else raw
            checked[option.name] = _check(option, value)
        except ValueError as exc:
            raise ConfigError(f"{where(option)}: {exc}") from None
    return checked


def default_burst(rate: float) -> int:
    """20 ms worth of requests, at least one.

    Slack for a pool that fell behind for a moment (every worker waiting on a slow answer) to
    catch up, while a one-second window can hold at most rate + burst = 1.02 × rate requests.
    The rate is kept either way, with burst 1 or R/50 (benchmarks/RESULTS.md, section 3).
    """
    return max(1, math.ceil(rate / 50))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The config file's settings (flat keys, or under a ``[run]`` table)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if isinstance(data.get("run"), dict):
        data = {**{k: v for k, v in data.items() if k != "run"}, **data["run"]}
    unknown = sorted(set(data) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"{source}: {_unknown_settings(unknown)}")
    return data


def _unknown_settings(unknown: list[str]) -> str:
    """All the file's unknown keys at once, each with the setting it likely meant; the known
    ones listed when one of them is not a near miss."""
    meant = {key: closest_setting(key) for key in unknown}
    named = [
        f"{key!r} (did you mean {meant[key]!r}?)" if meant[key] else repr(key) for key in unknown
    ]
    text = f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(named)}"
    if all(meant.values()):
        return text
    return f"{text} (known: {', '.join(sorted(BY_NAME))})"


def closest_setting(name: str) -> str | None:
    """The setting a mistyped name most likely meant (``ratee``, ``max-attempts``, the
    flag's spelling), if one is close."""
    close = difflib.get_close_matches(name.lower().replace("-", "_"), BY_NAME, n=1, cutoff=0.75)
    return close[0] if close else None


def misspelt_variables(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """``BULKTAG_*`` variables that are no setting's but close to one, with the one each
    likely meant: read by nothing, a typo in a systemd unit or a CronJob would leave its
    setting at the default every night. Others with the prefix are left alone (other
    tools' and scripts' own variables)."""
    known = {name for option in OPTIONS for name in option.env_names}
    misspelt = []
    for name in sorted(env):
        if name.startswith("BULKTAG_") and name not in known:
            meant = closest_setting(name.removeprefix("BULKTAG_"))
            if meant is not None:
                misspelt.append((name, BY_NAME[meant].env_names[0]))
    return misspelt


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    file_name: str = "config file",
) -> Settings:
    """Merge the layers: a flag beats a variable, which beats the file, which beats the default.

    ``flags`` holds only the flags the user gave (None means "not given").
    """
    from_file = _layer(
        lambda o: f"{file_name}: {o.name}",
        {BY_NAME[k]: v for k, v in file_values.items() if k in BY_NAME},
        convert=False,
    )
    from_env = _layer(
        lambda o: next(n for n in o.env_names if n in env),
        {o: env[n] for o in OPTIONS for n in reversed(o.env_names) if n in env},
        convert=True,
    )
    from_flags = _layer(
        lambda o: "--" + o.name.replace("_", "-"),
        {BY_NAME[k]: v for k, v in flags.items() if k in BY_NAME and v is not None},
        convert=False,
    )
    merged = {o.name: o.default for o in OPTIONS} | from_file | from_env | from_flags
    return Settings(**merged)
