"""view.html: self-contained (vendored three.js inlined, nothing from the network), the glb and metrics in it."""

from __future__ import annotations

import base64
import json
import re

from hoirecon.export.viewer import (MODULE_FILES, VENDOR_DIR, clip_metrics, render_view_html, scalar_items,
                                    write_clip_view)
from hoirecon.stages.outputs import ExportOutput, MasksOutput


def _import_map(page: str) -> dict:
    return json.loads(re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1))["imports"]


def _decoded_modules(page: str) -> dict[str, str]:
    prefix = "data:text/javascript;base64,"
    imports = _import_map(page)
    assert all(url.startswith(prefix) for url in imports.values())
    return {spec: base64.b64decode(url[len(prefix):]).decode("utf-8") for spec, url in imports.items()}


def test_vendored_three_is_there_with_its_licence():
    for name in MODULE_FILES.values():
        assert (VENDOR_DIR / name).stat().st_size > 10_000
    assert "MIT License" in (VENDOR_DIR / "LICENSE").read_text()


def test_page_inlines_every_module_and_imports_only_bare_specifiers():
    page = render_view_html("clip", b"glTF-bytes", {}, [])
    modules = _decoded_modules(page)
    assert set(modules) == set(MODULE_FILES)
    imports_seen = 0
    for spec, source in modules.items():
        # a data: URL module cannot resolve a relative import: every import must be in the map
        for found in re.findall(r"""\bimport\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*['"]([^'"]+)['"]""", source):
            assert "".join(found) in MODULE_FILES, (spec, found)
            imports_seen += 1
    assert imports_seen >= 4  # GLTFLoader: three + BufferGeometryUtils; the others: three
    # nothing fetched from anywhere: no http(s) src/href, no url in the import map
    assert not re.search(r"""(src|href)=["']?https?:""", page)


def test_glb_round_trips_and_title_and_metrics_are_escaped():
    glb = bytes(range(256)) * 3
    page = render_view_html("<clip>", glb, {"fit": {"mean_iou_object": 0.81234, "note": "</script>"}},
                            [("summary", "summary.png", "image")])
    text = re.search(r'<script id="glb" type="text/plain">(.*?)</script>', page, re.S).group(1)
    assert base64.b64decode(text) == glb
    assert "&lt;clip&gt;" in page and "<clip>" not in page
    assert "0.8123" in page and "&lt;/script&gt;" in page
    assert '<img src="summary.png"' in page


def test_scalar_items_flatten_one_level_and_drop_paths_and_lists():
    items = scalar_items({"passed": True, "track_iou": {"hand": 0.5, "object": 0.7}, "overlay": "/a/b.mp4",
                          "per_frame": [1, 2], "backend": "mediapipe"})
    assert items == {"passed": True, "track_iou.hand": 0.5, "track_iou.object": 0.7, "backend": "mediapipe"}


def test_write_clip_view_links_only_pictures_that_exist(tmp_path):
    out = tmp_path / "clip"
    export = out / ".export.tmp-1"
    export.mkdir(parents=True)
    (export / ExportOutput.GLB).write_bytes(b"glb")
    (export / ExportOutput.SUMMARY).write_bytes(b"png")
    (out / "masks").mkdir()
    (out / "masks" / MasksOutput.OVERLAY_FILE).write_bytes(b"mp4")
    (out / "masks" / "stage.json").write_text(json.dumps({"status": "done", "summary": {"track_iou": {"hand": .5}}}))
    (out / "eval.json").write_text(json.dumps({"f_at_10mm": 0.9}))
    page = write_clip_view(out, export, "clip").read_text()
    assert 'src="summary.png"' in page and 'src="../masks/overlay.mp4"' in page
    assert "side_by_side.mp4" not in page and "../hand/overlay.mp4" not in page
    assert clip_metrics(out) == {"masks": {"track_iou.hand": 0.5}, "eval": {"f_at_10mm": 0.9}}
