"""Tests for the state-dict check shared by the backends' checkpoint loaders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from hoirecon.io.checkpoints import check_state_dict, read_torch_checkpoint, strip_prefix
from hoirecon.errors import UserError


def _expected() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)], torch.nn.BatchNorm1d(4))
    return net.state_dict()


def test_matching_state_passes():
    expected = _expected()
    check_state_dict(expected, {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in expected.items()},
                     "ok.pth", "the test network")


def test_every_problem_kind_is_counted_and_named_on_one_line():
    expected = _expected()
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in expected.items()}
    for i in range(4):
        del state[f"{i}.bias"]
    state.update({f"extra.{i}": torch.zeros(1) for i in range(7)})
    state["0.weight"] = torch.zeros(4, 3)
    state["4.running_mean"] = np.zeros(4)
    with pytest.raises(UserError) as err:
        check_state_dict(expected, state, "ckpt.pth", "the test network")
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        "ckpt.pth does not match the test network: "
        "missing 4: 0.bias, 1.bias, 2.bias, 3.bias; "
        "unexpected 7: extra.0, extra.1, extra.2, extra.3, extra.4 (+2 more); "
        "wrong shape 1: 0.weight (4, 3) vs network (4, 4); "
        "not a tensor 1: 4.running_mean (ndarray)"
    )


def test_non_state_dicts_are_named():
    for state in (None, [torch.zeros(1)], {}, {"model": {"w": torch.zeros(1)}}):
        with pytest.raises(UserError, match=r"^x.pth is not a state dict of the test network"):
            check_state_dict(_expected(), state, "x.pth", "the test network")


def test_strip_prefix_keeps_order_and_reports_collisions():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert list(strip_prefix({"module.x": a, "y": b, "module.z": c}, "module.")) == ["x", "y", "z"]
    assert strip_prefix({"x": a}, "module.") == {"x": a}
    # Both spellings present: the prefixed one keeps its name so the check calls it unexpected.
    both = strip_prefix({"module.x": a, "x": b}, "module.")
    assert both.keys() == {"module.x", "x"} and both["x"] is b
    with pytest.raises(UserError, match="unexpected 1: module.x"):
        check_state_dict({"x": a}, both, "ckpt", "the test network")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_read_torch_checkpoint(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"model": {"w": torch.arange(3.0)}, "epoch": 4}, path)
    loaded = read_torch_checkpoint(path, "test checkpoint")
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(1), "evil": _Evil(marker)}, tmp_path / "evil.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(path.read_bytes()[:100])
    for bad in (tmp_path / "evil.pth", corrupt, tmp_path / "absent.pth"):
        with pytest.raises(UserError) as err:
            read_torch_checkpoint(bad, "test checkpoint")
        assert str(err.value).startswith(f"cannot read test checkpoint {bad}: ") and "\n" not in str(err.value)
    assert not marker.exists()


def test_refused_checkpoint_is_one_plain_line_without_torch_advice(tmp_path):
    bad = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "evil": _Evil(tmp_path / "pwned")}, bad)
    with pytest.raises(UserError) as err:
        read_torch_checkpoint(bad, "test checkpoint")
    message = str(err.value)
    assert "\x1b" not in message and "weights_only" not in message and "trust" not in message
    assert "system" in message and "never run" in message  # names the refused global (os.system)
