"""Every stage setting is declared once, on its config field, and the CLI offers it as declared.

Walks every field of every stage config: a field is either on its stage's command with the
field's flag, default and help, or marked internal with the reason it is not.
"""

import dataclasses

import pytest
import typer

from hoirecon.cli import BATCH_SETTINGS, RUN_SETTINGS, app
from hoirecon.pipeline.hashing import config_digest
from hoirecon.stages.configs import ExportConfig, FitConfig, FramesConfig, HandConfig, MasksConfig, PoseConfig

STAGE_COMMANDS = [(("frames",), FramesConfig), (("masks",), MasksConfig), (("hand",), HandConfig),
                  (("fit",), FitConfig), (("export",), ExportConfig), (("pose", "run"), PoseConfig)]
# A field whose command-line default is not the field's: a person gets the shipped prior,
# code that builds a FitConfig (tests, benchmarks) gets none and needs no weights.
OWN_CLI_DEFAULTS = {(FitConfig, "prior"): ("none", "hoirecon")}


def _command(words: tuple[str, ...]):
    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return command


def _option(command, flag: str):
    """The click option with this flag (the positive one of a ``--a/--b`` pair, checking the pair)."""
    positive, _, negative = flag.partition("/")
    for param in command.params:
        if positive in param.opts:
            assert not negative or negative in param.secondary_opts, (flag, param.secondary_opts)
            return param
    return None


def _expected_flag(f: dataclasses.Field) -> str:
    flag = "--" + f.name.replace("_", "-")
    return f.metadata.get("flag") or (f"{flag}/--no-{flag[2:]}" if f.type in (bool, "bool") else flag)


@pytest.mark.parametrize("words, config_type", STAGE_COMMANDS, ids=[" ".join(w) for w, _ in STAGE_COMMANDS])
def test_stage_command_offers_every_field_as_declared(words, config_type):
    command = _command(words)
    for f in dataclasses.fields(config_type):
        if "internal" in f.metadata:
            assert len(f.metadata["internal"]) > 20, f"{config_type.__name__}.{f.name}: say why it is internal"
            continue
        where = f"{' '.join(words)}: {config_type.__name__}.{f.name}"
        param = _option(command, _expected_flag(f))
        assert param is not None, f"{where} has no option {_expected_flag(f)}"
        assert param.help == f.metadata["help"], where
        parse = f.metadata.get("parse", lambda v: v)
        if f.default is dataclasses.MISSING:
            assert param.required, where
        elif (config_type, f.name) in OWN_CLI_DEFAULTS:
            assert OWN_CLI_DEFAULTS[config_type, f.name] == (f.default, param.default), where
        else:
            assert parse(param.default) == f.default, f"{where}: CLI default {param.default!r} != {f.default!r}"


@pytest.mark.parametrize("command_name, groups", [("run", RUN_SETTINGS), ("batch", BATCH_SETTINGS)])
def test_run_and_batch_offer_the_stage_fields_as_declared(command_name, groups):
    command = _command((command_name,))
    for group in groups.values():
        for setting in group.settings():
            param = _option(command, setting.decls[0])
            assert param is not None, (command_name, setting.name)
            assert (param.help, param.default) == (setting.help, setting.default), (command_name, setting.name)


def test_run_keeps_its_flags():
    flags = {o for p in _command(("run",)).params for o in p.opts}
    assert flags >= {"--max-frames", "--stride", "--size", "--hand-box", "--object-box", "--boxes", "--masks-dir",
                     "--detector", "--segmenter", "--tracker", "--iou-threshold", "--hand-backend", "--side",
                     "--hand-model", "--focal", "--fov", "--preset", "--prior", "--sds-weight", "--sds-every",
                     "--steps", "--seed", "--format", "--category", "--out", "--force", "--device"}


def test_every_stage_field_is_a_setting():
    """A bare field (no help, no reason to be internal) would silently stay off the command line."""
    for _, config_type in STAGE_COMMANDS:
        for f in dataclasses.fields(config_type):
            assert "help" in f.metadata or "internal" in f.metadata, f"{config_type.__name__}.{f.name}"


# Digests of the default configs before the settings carried metadata: the same settings
# keep the same cache keys, so existing output folders stay cached. (FitConfig's changed three times
# since, on purpose: it gained `init`; `sds_every` became 2; it gained the SDS schedule and view
# weighting, `sds_fade_from`, `sds_end` (1, 1: off), `sds_seen_deg`, `sds_unseen_deg` (20, 60: on).
# HandConfig's changed twice, on purpose: it gained `drop_below_iou`, with hand stage version 3, and
# `silhouette_steps` (20), with hand stage version 4. MasksConfig's and HandConfig's `side` default became
# "auto" with masks 17 / hand 5. FramesConfig's changed with frames 2: `stride` None (chosen) and
# `frame_budget` (120); PoseConfig's with pose 2: it gained `fov_deg`.)
DEFAULT_DIGESTS = {
    FramesConfig: "d25b0ab16cd12e31653343b3bd7e893df8cfacbc185a6866749b21dab87ea2fb",
    MasksConfig: "98f23170ab5857a66d735f715329555c87bc4b5b7947b4fe5166a746833c24ee",
    HandConfig: "afcb45d94f425ed8d194da9f5a62a782c4021f809ea0a8e3094b31c7d7e4223c",
    FitConfig: "971516f5362223a04d4d8a7b46f264219b178e6cac2d20f1e47bee749d13121f",
    ExportConfig: "1382f9c648b5f46a3deaf29e2009b49a2334c37f0a58133384264b6b62b0fa59",
    PoseConfig: "fda42e7d5e463001ee2ff524def579768e5474188376064a11933a378b19ed80",
}


def test_config_digests_read_values_only():
    required = {FramesConfig: {"source": "/clip.mp4"}, PoseConfig: {"object_mesh": "/m.ply"}}
    for config_type, digest in DEFAULT_DIGESTS.items():
        assert config_digest(config_type(**required.get(config_type, {}))) == digest, config_type.__name__


def test_fit_presets_are_the_declared_names():
    from hoirecon.stages.configs import FIT_PRESETS
    from hoirecon.stages.fit import PRESETS, preset_configs

    assert tuple(PRESETS) == FIT_PRESETS
    init, opt = preset_configs(FitConfig(preset="paper", steps=7, seed=3, blend="hard"))
    assert (init.sdf_kind, opt.steps, opt.rays_per_step, opt.seed, opt.blend.mode) == ("mlp", 7, 1024, 3, "hard")
    assert PRESETS["paper"].opt.steps == 50000  # the override did not leak into the preset


def test_fit_hidden_volume_cost_only_with_a_prior():
    from hoirecon.stages.fit import PRESETS, preset_configs

    assert PRESETS["fast"].opt.weights.hidden_volume > 0
    _, with_prior = preset_configs(FitConfig(prior="hoirecon"))
    _, without = preset_configs(FitConfig(prior="none"))
    assert with_prior.weights.hidden_volume == PRESETS["fast"].opt.weights.hidden_volume
    assert without.weights.hidden_volume == 0.0
