"""The CLI's cheap commands stay cheap: `--help` and `--version` must not import torch or the stages."""

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


def test_looking_up_one_stage_imports_only_that_stage():
    code = ("import sys; from hoirecon.stages.registry import STAGES; assert STAGES['frames'].name == 'frames'; "
            "assert list(STAGES) == ['frames', 'masks', 'hand', 'fit', 'export', 'pose']; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "hoirecon.stages.frames" in loaded
    assert not loaded & {"torch", "hoirecon.stages.fit", "hoirecon.stages.pose"}
