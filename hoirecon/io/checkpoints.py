"""Reading a torch checkpoint and checking its state dict against a network, the same way
everywhere (backends, the prior, the fit's resume checkpoint and scene file).

``read_torch_checkpoint`` is ``torch.load(weights_only=True)`` with a one-line ``UserError``.
Backends then do their own fix-ups (unwrapping ``{"model": ...}``, renaming keys, STCN's
4 -> 5 channel ``conv1``), then call ``check_state_dict`` so that every mismatch is reported
in the same one-line ``UserError`` before ``load_state_dict(strict=True)`` runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from hoirecon.errors import UserError

__all__ = ["check_state_dict", "read_torch_checkpoint", "strip_prefix"]

# How many names of each problem kind the message shows (the count is always given).
_SHOWN = 5


def read_torch_checkpoint(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; no code in the file runs.

    Raises ``UserError`` ``"cannot read <what> <path>: <error type>: <first line>"`` for a
    missing, corrupt or truncated file, or a pickle that needs globals ``weights_only`` refuses.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, truncated pickle, refused global, ...
        raise UserError(f"cannot read {what} {path}: {_load_failure(err)}") from None


def _load_failure(err: Exception) -> str:
    """One plain line for a failed ``torch.load``. A refused pickle gets no advice to load it
    with ``weights_only=False`` (torch's own message starts with that, in ANSI bold): running
    the file's code is exactly what is refused."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if text.startswith("Weights only load failed"):
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects besides tensors{what}, whose code is never run here; it is not a "
                f"weights file this tool can use")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``state`` with ``prefix`` removed from the keys that start with it (order kept).

    For wrapper prefixes such as ``module.`` (a DataParallel save) or ``glide_model.`` (a
    LightningModule attribute). A key whose stripped name is also present as-is keeps its long
    name, so ``check_state_dict`` reports it as unexpected instead of one silently overwriting
    the other.
    """
    out: dict[str, Any] = {}
    for name, value in state.items():
        short = name[len(prefix):] if name.startswith(prefix) else name
        out[short if short == name or short not in state else name] = value
    return out


def _few(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Any, where: str, network: str) -> None:
    """Raise a one-line ``UserError`` unless ``state`` has exactly the keys and shapes of ``expected``.

    Args:
        expected: the network's own ``state_dict()`` (meta-device tensors are fine: only
            names and shapes are read).
        state: the checkpoint's name -> tensor mapping, after the backend's key fix-ups.
        where: names the file in the message (usually its path).
        network: names the network in the message ("the STCN network").

    The message gives, for each problem kind (missing, unexpected, wrong shape, not a tensor),
    the count and the first few names: ``"<where> does not match <network>: missing 1: a.weight;
    wrong shape 1: b.bias (3,) vs network (512,)"``. A ``state`` that is not a mapping of names
    to tensors at all is reported as such.
    """
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{where} is not a state dict of {network} (expected a name -> tensor mapping)")
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    not_tensor = [f"{name} ({type(state[name]).__name__})" for name in expected
                  if name in state and not isinstance(state[name], torch.Tensor)]
    wrong_shape = [f"{name} {tuple(state[name].shape)} vs network {tuple(ref.shape)}"
                   for name, ref in expected.items()
                   if isinstance(state.get(name), torch.Tensor) and state[name].shape != ref.shape]
    problems = [f"{label} {len(items)}: {_few(items)}"
                for label, items in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong_shape), ("not a tensor", not_tensor))
                if items]
    if problems:
        raise UserError(f"{where} does not match {network}: " + "; ".join(problems))
