"""Typer options generated from config dataclasses, so that a setting is declared once.

``@with_settings(fit=Group(FitConfig), ...)`` puts the options of each group's fields into the
command's signature where its ``settings`` parameter stands, and calls the command with
``settings``: a ``Settings`` that holds, per group, {field: value} ready for the config
(``settings.fit``), and the command-line values to pass on to a child process (``batch``).
Two groups may share a flag (``run``'s ``--side`` feeds masks and hand) when both fields
declare the same type, default and help.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

from hoirecon.settings import Setting, user_settings


@dataclass(frozen=True)
class Group:
    """Which fields of a config a command exposes: all user-facing ones, or ``only`` these;
    ``flags`` renames an option for this command (``{"backend": "--hand-backend"}``)."""

    config_type: type
    only: Optional[tuple[str, ...]] = None
    flags: Optional[dict[str, str]] = None

    def settings(self) -> list[Setting]:
        chosen = [s for s in user_settings(self.config_type) if self.only is None or s.name in self.only]
        missing = set(self.only or ()) - {s.name for s in chosen}
        if missing:
            raise TypeError(f"{self.config_type.__name__} has no user-facing field(s) {sorted(missing)}")
        renamed = self.flags or {}
        return [Setting(s.name, (renamed[s.name],) + s.decls[1:], s.type, s.default, s.help, s.parse)
                if s.name in renamed else s for s in chosen]


class Settings:
    """What a command's generated options gave. ``settings.<group>`` is {field: value} for that
    group's config, parsed when the command asks (a bad value then fails inside the command,
    with its JSON summary, like any other bad input)."""

    def __init__(self, given: list[tuple[Setting, Any, list[tuple[str, Setting]]]], groups: tuple[str, ...]):
        self._given = given  # (the option, its value, the (group, field) it feeds)
        self._groups = groups

    def __getattr__(self, group: str) -> dict[str, Any]:
        if group.startswith("_") or group not in self._groups:
            raise AttributeError(group)
        return {s.name: s.parse(value) for _, value, targets in self._given for g, s in targets if g == group}

    def as_argv(self) -> list[str]:
        """The options as given (defaults included, unset ones left out), e.g. for ``hoirecon run``."""
        return [a for s, value, _ in self._given if value is not None for a in s.as_argv(value)]


def _identifier(setting: Setting) -> str:
    return setting.flag.lstrip("-").replace("-", "_")


def _option(setting: Setting) -> inspect.Parameter:
    return inspect.Parameter(_identifier(setting), inspect.Parameter.KEYWORD_ONLY, annotation=setting.type,
                             default=typer.Option(setting.default, *setting.decls, help=setting.help))


def _merge(routes: dict[str, list[tuple[str, Setting]]], group: str, setting: Setting) -> None:
    """Route an option to one more field; a flag two groups share must mean the same to both."""
    ident = _identifier(setting)
    if ident in routes:
        first = routes[ident][0][1]
        if (first.decls, first.type, first.default, first.help) != (setting.decls, setting.type, setting.default,
                                                                   setting.help):
            raise TypeError(f"{setting.flag}: {routes[ident][0][0]} and {group} declare it differently")
    routes.setdefault(ident, []).append((group, setting))


def with_settings(**groups: Group) -> Callable[[Callable], Callable]:
    """Decorator: the command's ``settings`` parameter becomes the groups' options."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        at = [p.name for p in own].index("settings")
        routes: dict[str, list[tuple[str, Setting]]] = {}
        for name, group in groups.items():
            for setting in group.settings():
                _merge(routes, name, setting)
        options = [_option(targets[0][1]) for targets in routes.values()]
        own_decls = {d for p in own for d in getattr(p.default, "param_decls", None) or ()}
        generated_decls = {d for o in options for d in o.default.param_decls}
        clash = ({p.name for p in own} & set(routes)) | (own_decls & generated_decls)
        if clash:
            raise TypeError(f"{command.__name__}: {sorted(clash)} both its own and generated")

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = [(targets[0][1], kwargs.pop(ident), targets) for ident, targets in routes.items()]
            return command(settings=Settings(given, tuple(groups)), **kwargs)

        params = own[:at] + options + own[at + 1:]
        wrapper.__signature__ = signature.replace(parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                                                              for p in params])
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate
