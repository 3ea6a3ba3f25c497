"""The daemon's one settings tree, built once at the entry point and passed down.

Sources, highest priority first: keyword arguments (tests), environment variables
(``ACTIONLOOP_`` prefix, ``__`` between nested names, e.g.
``ACTIONLOOP_SOCKETS__FRAMES=tcp://10.0.0.2:5555``), an optional TOML file, then the defaults
below. Unknown keys are errors, so a typo in a config file cannot be silently ignored.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from protocols.ttl import MAX_LINE

ENV_PREFIX = "ACTIONLOOP_"
ENV_NESTED_DELIMITER = "__"

# The TOML file of the settings being built right now (None: no file). A context variable
# rather than a class attribute so that two settings objects can be built concurrently.
_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_CONFIG_FILE", default=None)


class SettingsError(ValueError):
    """The configuration cannot be used; the message names the file/variable and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SocketSettings(_Section):
    """ZeroMQ endpoints. Loopback by default: nothing is reachable from another machine."""

    frames: str = Field("tcp://127.0.0.1:5555", description="where frames come from (SUB socket)")
    frames_mode: Literal["connect", "bind"] = Field(
        "connect", description="connect to a microscope bridge that binds its PUB, or bind and let it connect"
    )
    actions: str = Field("tcp://127.0.0.1:5556", description="PUB socket for actions, events and status (bound)")
    control: str = Field("tcp://127.0.0.1:5557", description="ROUTER socket for control requests (bound)")
    json_mirror: str | None = Field(
        None,
        description="optional second PUB socket (bound) that mirrors actions, events and status as [topic, JSON] "
        "for clients without msgpack (docs/wire-protocol.md, JSON mirror); unset or empty: off",
    )
    frames_rcvhwm: int = Field(
        64, ge=1, description="frames ZeroMQ may queue before dropping; the daemon drains them newest-first"
    )
    actions_sndhwm: int = Field(
        10_000, ge=1, description="messages queued per slow subscriber before ZeroMQ drops for that subscriber"
    )
    linger_ms: int = Field(200, ge=0, le=10_000, description="bounded time to flush sockets at shutdown")
    frames_clock: Literal["auto", "shared", "separate"] = Field(
        "auto",
        description="whether the frame publisher stamps with this host's monotonic clock, so that the age of a "
        "decided frame (its t_pub_ns -> action published) can be measured; auto: shared when the frames endpoint "
        "is ipc://, inproc:// or TCP on a loopback address",
    )

    @field_validator("json_mirror")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value or None  # ACTIONLOOP_SOCKETS__JSON_MIRROR="" turns the mirror off

    @property
    def frames_clock_shared(self) -> bool:
        if self.frames_clock != "auto":
            return self.frames_clock == "shared"
        return endpoint_is_local(self.frames)


def endpoint_is_local(endpoint: str) -> bool:
    """A ZeroMQ endpoint that only this host can be on (ipc, inproc, TCP on loopback)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if ";" in host:  # tcp://source;destination: the destination decides
        host = host.rsplit(";", 1)[1].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name, a host name or "*": may be another host


class BackendSettings(_Section):
    name: Literal["auto", "onnxruntime", "tensorrt", "torch"] = "auto"
    threads: int = Field(1, ge=1, le=64, description="intra-op threads of the backend")
    mode: Literal["streaming", "whole_window"] = Field(
        "streaming",
        description="streaming: encode each frame once (the product); whole_window: re-run the whole "
        "window per frame (a baseline for benchmarks only)",
    )
    warmup_frames: int = Field(50, ge=0, description="inferences run before reporting ready")
    online_centring: bool = Field(
        True,
        description="apply the bundle's online centring (adaptation.json: keep re-centring the embedding on the "
        "animal's running mean while decoding); false: the calibration's centring alone",
    )


class ModelSettings(_Section):
    bundle: Path | None = Field(None, description="model bundle directory (required to serve)")
    reload_allowed_dirs: tuple[Path, ...] = Field(
        (),
        description="if set, `reload` accepts only bundles inside one of these directories (symlinks "
        "resolved); empty (the default): any bundle directory. See decoder.model.check_reload_allowed",
    )

    @model_validator(mode="after")
    def _absolute_reload_dirs(self) -> ModelSettings:
        relative = [str(d) for d in self.reload_allowed_dirs if not d.is_absolute()]
        if relative:
            raise ValueError(f"reload_allowed_dirs must be absolute paths, got {', '.join(relative)}")
        return self


class PolicySettings(_Section):
    min_confidence: float = Field(
        0.6, ge=0.0, le=1.0, description="probability the top class needs to count towards an onset"
    )
    min_duration_s: float = Field(
        0.1, ge=0.0, description="an action must hold this long before its onset event (and stop this long before its offset)"
    )
    max_gap_frames: int = Field(
        5,
        ge=0,
        description="missing frames (lost upstream or skipped) tolerated inside the window; a larger gap resets it",
    )
    heartbeat_interval_s: float = Field(1.0, gt=0.0, description="status message period on the actions socket")
    stall_timeout_s: float = Field(
        2.0, gt=0.0, description="an inference running longer than this counts as stuck (stops watchdog pings)"
    )
    shutdown_timeout_s: float = Field(5.0, gt=0.0, description="longest wait for the frame in flight at shutdown")


class ControlSettings(_Section):
    """The control socket's budget, so that no flood of requests takes time from the frames."""

    rate_per_s: float = Field(
        200.0, gt=0.0, description="requests carried out per second, sustained (token bucket; one client may use half); "
        "more are refused as busy"
    )
    burst: int = Field(50, ge=1, description="requests carried out back to back before rate_per_s applies")
    batch: int = Field(
        16,
        ge=1,
        le=4096,
        description="requests read per turn of the event loop; after a turn that refused one as busy none are read "
        "for 1 / rate_per_s, so a flood beyond batch x rate_per_s per second waits in ZeroMQ's queues, not in the daemon",
    )


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    summary_interval_s: float = Field(10.0, gt=0.0, description="period of the one-line summary (counts, latency)")
    bad_input_interval_s: float = Field(
        5.0, gt=0.0, description="at most one warning per kind of bad input per this many seconds"
    )


class DecisionLogSettings(_Section):
    enabled: bool = True
    path: Path = Field(Path("actionloop-decisions.msgpack"), description="current file; rotated ones get .1, .2, ...")
    rotate_bytes: int = Field(64 * 1024 * 1024, ge=4096, description="rotate when the file grows past this")
    keep: int = Field(20, ge=1, description="rotated files kept (older ones are deleted)")


class SecuritySettings(_Section):
    """Optional CURVE encryption + authentication for rigs on a shared network."""

    curve: bool = False
    server_secret_key: Path | None = Field(
        None, description="the daemon's key pair (a .key_secret file from zmq.auth.create_certificates)"
    )
    authorized_clients_dir: Path | None = Field(
        None, description="directory of allowed clients' public .key files"
    )
    frames_server_public_key: Path | None = Field(
        None, description="public key of the frame publisher, when frames_mode is connect and it uses CURVE"
    )

    @model_validator(mode="after")
    def _curve_needs_keys(self) -> SecuritySettings:
        if self.curve and (self.server_secret_key is None or self.authorized_clients_dir is None):
            raise ValueError("curve = true needs server_secret_key and authorized_clients_dir")
        return self


class MetricsSettings(_Section):
    """Prometheus endpoint (decoder/metrics.py). Off by default; loopback when on."""

    enabled: bool = Field(False, description="serve /metrics over HTTP for Prometheus")
    host: str = Field(
        "127.0.0.1", min_length=1, description="address to listen on; loopback: only this host can scrape"
    )
    port: int = Field(9556, ge=0, le=65535, description="TCP port; 0: any free port (the ready log line says which)")
class LineOutputSettings(_Section):
    """What every TTL output shares: which actions drive which line, and when."""

    lines: dict[str, int] = Field(
        ..., min_length=1, description="action name -> output line (0..126): high from its onset to its offset"
    )
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="an onset below this confidence leaves its line low (its offset then too)"
    )
    reopen_interval_s: float = Field(1.0, gt=0.0, description="how often a failed or missing device is tried again")

    @field_validator("lines")
    @classmethod
    def _line_numbers(cls, lines: dict[str, int]) -> dict[str, int]:
        bad = [f"{name} = {line}" for name, line in lines.items() if not 0 <= line <= MAX_LINE]
        if bad:
            raise ValueError(f"lines must be 0..{MAX_LINE}: {', '.join(bad)}")
        return lines


class SerialOutputSettings(LineOutputSettings):
    """A USB-serial microcontroller that drives TTL lines (protocols/ttl.py, deploy/arduino/)."""

    port: str = Field(..., min_length=1, description="serial device, e.g. /dev/serial/by-id/usb-Teensy... or /dev/ttyACM0")
    baud: int = Field(115200, gt=0, description="bit rate; must match the sketch's Serial.begin")


def _lines_exist(settings: LineOutputSettings, names: list[str], field: str) -> None:
    """Every line in ``lines`` is one of the device's named lines (line n = the n-th name)."""
    bad = [f"{action} = {line}" for action, line in settings.lines.items() if line >= len(names)]
    if bad:
        raise ValueError(f"lines {', '.join(bad)}: {field} names only {len(names)} line(s), 0..{len(names) - 1}")
    if len(set(names)) != len(names):
        raise ValueError(f"{field} names a line twice: {', '.join(names)}")


# NI-DAQmx physical line names: "Dev1/port0/line3" or a range "Dev1/port0/line0:7" (either
# direction), comma-separated. Whole ports ("Dev1/port0") are refused: their line count is the
# device's, unknown until it is open, and one channel per line needs lines named one by one.
_NI_LINES = re.compile(r"(?P<port>[^/,:\s]+/port\d+)/line(?P<first>\d+)(?::(?P<last>\d+))?")


def ni_line_names(spec: str) -> list[str]:
    """``"Dev1/port0/line0:2, Dev1/port1/line5"`` -> each line's own name, in order."""
    names: list[str] = []
    for item in spec.split(","):
        match = _NI_LINES.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"not an NI-DAQmx line or line range: {item.strip()!r} "
                             f"(like Dev1/port0/line0 or Dev1/port0/line0:7)")
        first = int(match["first"])
        last = first if match["last"] is None else int(match["last"])
        step = 1 if last >= first else -1
        names += [f"{match['port']}/line{n}" for n in range(first, last + step, step)]
    return names


class NidaqOutputSettings(LineOutputSettings):
    """Digital output lines of an NI-DAQ device through NI-DAQmx (decoder/outputs/nidaq.py)."""

    physical_lines: str = Field(
        ..., min_length=1,
        description='NI-DAQmx lines, e.g. "Dev1/port0/line0:7" (device name as in NI MAX); '
                    "line n of `lines` is the n-th of them",
    )

    @property
    def line_names(self) -> list[str]:
        return ni_line_names(self.physical_lines)

    @model_validator(mode="after")
    def _known_lines(self) -> NidaqOutputSettings:
        _lines_exist(self, self.line_names, "physical_lines")
        return self


# The T-series' digital lines by their screw-terminal names or as DIO0..DIO22 (T7; the T4 has
# DIO4..DIO19, the T8 DIO0..DIO19: a line the device lacks fails when it is opened).
_LABJACK_LINE = re.compile(r"FIO[0-7]|EIO[0-7]|CIO[0-3]|MIO[0-2]|DIO(?:[0-9]|1[0-9]|2[0-2])")


class LabjackOutputSettings(LineOutputSettings):
    """Digital output lines of a LabJack T4/T7/T8 through LJM (decoder/outputs/labjack.py)."""

    device_type: Literal["ANY", "T4", "T7", "T8"] = Field("ANY", description="which model to open")
    connection_type: Literal["ANY", "USB", "TCP", "ETHERNET", "WIFI"] = Field("ANY", description="how to reach it")
    identifier: str = Field(
        "ANY", min_length=1,
        description='serial number, IP address or device name; "ANY": the first one LJM finds',
    )
    physical_lines: list[str] = Field(
        ..., min_length=1, description='digital lines, e.g. ["FIO0", "FIO1", "EIO0"]; line n of `lines` is the n-th'
    )

    @field_validator("physical_lines")
    @classmethod
    def _line_names(cls, names: list[str]) -> list[str]:
        bad = [name for name in names if not _LABJACK_LINE.fullmatch(name)]
        if bad:
            raise ValueError(f"not LabJack digital lines: {', '.join(map(repr, bad))} "
                             f"(FIO0-7, EIO0-7, CIO0-3, MIO0-2 or DIO0-22)")
        return names

    @model_validator(mode="after")
    def _known_lines(self) -> LabjackOutputSettings:
        _lines_exist(self, self.physical_lines, "physical_lines")
        # FIO0 is DIO0, EIO0 DIO8, CIO0 DIO16, MIO0 DIO20: one line by two names is named twice
        first = {"FIO": 0, "EIO": 8, "CIO": 16, "MIO": 20, "DIO": 0}
        seen: dict[int, str] = {}
        for name in self.physical_lines:
            dio = first[name[:3]] + int(name[3:])
            if dio in seen:
                raise ValueError(f"physical_lines names a line twice: {seen[dio]} and {name} are both DIO{dio}")
            seen[dio] = name
        return self


class OutputSettings(_Section):
    """Hardware outputs driven by events; each is off unless its section is present."""

    serial: SerialOutputSettings | None = None
    nidaq: NidaqOutputSettings | None = None
    labjack: LabjackOutputSettings | None = None


class DecoderSettings(BaseSettings):
    """Everything the daemon can be told. See deploy/decoder.toml for a commented example."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    sockets: SocketSettings = SocketSettings()
    backend: BackendSettings = BackendSettings()
    model: ModelSettings = ModelSettings()
    policy: PolicySettings = PolicySettings()
    control: ControlSettings = ControlSettings()
    logging: LoggingSettings = LoggingSettings()
    decision_log: DecisionLogSettings = DecisionLogSettings()
    security: SecuritySettings = SecuritySettings()
    metrics: MetricsSettings = MetricsSettings()
    outputs: OutputSettings = OutputSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | str | None = None, **overrides: object) -> DecoderSettings:
    """Build the settings once: overrides > ``ACTIONLOOP_*`` environment > TOML file > defaults.

    Raises SettingsError naming the file or variable and what is wrong.
    """
    path = Path(config_file) if config_file is not None else None
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist or is not a file")
        try:
            with path.open("rb") as handle:
                tomllib.load(handle)  # parse once here for a clear message on syntax errors
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    token = _CONFIG_FILE.set(path)
    try:
        return DecoderSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        where = f"config file {path} / " if path is not None else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings ({where}{ENV_PREFIX}* environment): {problems}") from exc
    finally:
        _CONFIG_FILE.reset(token)
