"""One declaration per setting: a config dataclass field carries its default, help and flag.

``setting(...)`` puts a field's command-line face into its ``dataclasses.field`` metadata;
``hoirecon.cli_options`` turns those fields into each command's options. Metadata never reaches
a config's JSON or cache key: both are built from ``dataclasses.asdict``, which reads values only.

Light on purpose (no torch, numpy or typer): the stage configs that use it are imported by
``hoirecon --help`` and ``hoirecon status``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING
from typing import Any, Callable, Optional


def setting(default: Any = MISSING, help: str = "", *, flag: Optional[str] = None, short: Optional[str] = None,
            cli_type: Any = None, cli_default: Any = MISSING, parse: Optional[Callable[[Any], Any]] = None,
            internal: Optional[str] = None) -> Any:
    """A config field with its command-line face.

    flag: the option's name(s) when they are not the field's (``--rays``; ``--a/--b`` for a
    bool); short: e.g. ``-c``. cli_type / cli_default / parse: what the command line takes
    where that is not the field's type or default, and how it becomes the field's value.
    internal: why the field is not on the command line (it is then set only in code).
    """
    if not (help or internal):
        raise ValueError("a setting needs help text, or internal= saying why it is not on the command line")
    metadata = {"help": help, "flag": flag, "short": short, "cli_type": cli_type, "cli_default": cli_default,
                "parse": parse, "internal": internal}
    return dataclasses.field(default=default,
                             metadata={k: v for k, v in metadata.items() if v is not None and v is not MISSING})


@dataclasses.dataclass(frozen=True)
class Setting:
    """The command-line face of one config field."""

    name: str  # the field's name
    decls: tuple[str, ...]  # option declarations, e.g. ("--sfm/--no-sfm",) or ("--category", "-c")
    type: Any  # what the command line parses
    default: Any  # the command line's default (``...``: required)
    help: str
    parse: Callable[[Any], Any]  # command-line value -> field value

    @property
    def flag(self) -> str:
        """The main option name (the positive one of a ``--a/--b`` pair)."""
        return self.decls[0].split("/")[0]

    def as_argv(self, value: Any) -> list[str]:
        """``value`` (a command-line value) written back as arguments, e.g. to pass on to a child process."""
        if self.type is bool:
            positive, _, negative = self.decls[0].partition("/")
            return [positive if value else negative]
        return [self.flag, str(value)]


def _flag(name: str, is_bool: bool) -> str:
    flag = "--" + name.replace("_", "-")
    return f"{flag}/--no-{flag[2:]}" if is_bool else flag


def _identity(value: Any) -> Any:
    return value


def user_settings(config_type: type) -> list[Setting]:
    """The fields of ``config_type`` that are on the command line, in declaration order."""
    hints = typing.get_type_hints(config_type)
    settings = []
    for f in dataclasses.fields(config_type):
        meta = f.metadata
        if "internal" in meta:
            continue
        if "help" not in meta:
            raise TypeError(f"{config_type.__name__}.{f.name} is not declared with setting(...)")
        cli_type = meta.get("cli_type", hints[f.name])
        default = meta.get("cli_default", f.default)
        decls = (meta.get("flag") or _flag(f.name, cli_type is bool),) + ((meta["short"],) if "short" in meta else ())
        settings.append(Setting(f.name, decls, cli_type, ... if default is MISSING else default, meta["help"],
                                meta.get("parse", _identity)))
    return settings


def internal_settings(config_type: type) -> dict[str, str]:
    """{field: why it is not on the command line} of ``config_type``."""
    return {f.name: f.metadata["internal"] for f in dataclasses.fields(config_type) if "internal" in f.metadata}
