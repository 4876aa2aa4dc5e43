"""The CLI's cheap commands stay cheap: `--help`, `--version` and `status` must not import torch or the stages."""

import subprocess
import sys

HEAVY = ("torch", "trimesh", "cv2", "hoirecon.stages.fit", "hoirecon.stages.masks")


def _modules_after(argv: list[str]) -> set[str]:
    # the module list goes to stderr: stdout holds the help text, which may name torch
    code = ("import sys; from hoirecon.cli import main; code = main(%r); "
            "print(' '.join(sorted(sys.modules)), file=sys.stderr); sys.exit(code)" % (argv,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stderr.split())


def test_help_imports_no_heavy_module():
    loaded = _modules_after(["--help"])
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_version_imports_no_heavy_module():
    loaded = _modules_after(["--version"])
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_looking_up_a_stage_imports_no_stage_module():
    code = ("import sys; from hoirecon.stages.registry import STAGES; assert STAGES['frames'].name == 'frames'; "
            "assert list(STAGES) == ['frames', 'masks', 'hand', 'fit', 'export', 'pose']; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & {"torch", "cv2", "hoirecon.stages.frames", "hoirecon.stages.fit", "hoirecon.stages.pose"}


def _image_folder_out(tmp_path):
    """An output folder whose frames stage ran on a folder of two images."""
    import numpy as np

    from hoirecon.io.video import write_png
    from hoirecon.pipeline.runner import run_stage
    from hoirecon.stages.configs import FramesConfig
    from hoirecon.stages.registry import STAGES

    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(2):
        write_png(clip / f"{i}.png", np.full((32, 32, 3), 40 * i, np.uint8))
    run_stage(tmp_path / "out", STAGES["frames"], FramesConfig(source=str(clip)))
    return tmp_path / "out"


def test_running_a_stage_imports_only_that_stage(tmp_path):
    clip = _image_folder_out(tmp_path).parent / "clip"
    code = ("import sys; from pathlib import Path; from hoirecon.pipeline.runner import run_stage; "
            "from hoirecon.stages.configs import FramesConfig; from hoirecon.stages.registry import STAGES; "
            f"run_stage(Path({str(tmp_path / 'again')!r}), STAGES['frames'], FramesConfig(source={str(clip)!r})); "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "hoirecon.stages.frames" in loaded
    assert not loaded & {"torch", "hoirecon.stages.fit", "hoirecon.stages.pose"}


def test_status_imports_no_heavy_module(tmp_path):
    out = _image_folder_out(tmp_path)
    loaded = _modules_after(["status", str(out), "--json"])
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not {m for m in loaded if m.startswith("hoirecon.stages.")} - {"hoirecon.stages.configs",
                                                                           "hoirecon.stages.registry"}
