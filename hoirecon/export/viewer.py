"""``view.html``: the animated ``interaction.glb`` in an interactive three.js viewer that works offline.

The page is one self-contained file: the vendored three.js modules (``vendor/three/``, MIT)
and the glb itself are inlined, because browsers refuse ES modules and ``fetch`` on
``file://`` pages (Chromium: "origin null"), and a result folder is usually opened from disk.
The modules go into an import map as ``data:`` URLs; the glb is base64 text that the page
decodes and hands to ``GLTFLoader.parse``. Nothing is loaded from the network.

Beside the 3D view: orbit controls, play/pause, a frame slider, the clip's metrics (the
stage summaries recorded in each stage's manifest, and ``<out>/eval.json`` when present) and
its pictures (``summary.png``, ``side_by_side.mp4``, ``turntable.mp4``, the masks and hand
overlay videos) by relative links, so the export folder can be moved with its clip folder.

The page reports its own state for automatic checks (``benchmarks/check_viewer.py``):
``<body data-state="loading|ready|error">`` and ``data-errors`` (errors the page saw).
"""

from __future__ import annotations

import base64
import html
import json
import re
from functools import lru_cache
from pathlib import Path

from hoirecon.pipeline.runner import read_manifest
from hoirecon.stages.outputs import EvalOutput, ExportOutput, HandsOutput, MasksOutput

VENDOR_DIR = Path(__file__).parent / "vendor" / "three"
# bare specifier used by the page -> vendored file
MODULE_FILES = {
    "three": "three.module.min.js",
    "three/addons/loaders/GLTFLoader.js": "GLTFLoader.js",
    "three/addons/utils/BufferGeometryUtils.js": "BufferGeometryUtils.js",
    "three/addons/controls/OrbitControls.js": "OrbitControls.js",
}
# A data: URL has no folder, so a relative import inside one cannot resolve: rename it to the
# bare specifier the import map knows (done here, at write time; the vendored files stay as shipped).
RELATIVE_IMPORTS = {
    "GLTFLoader.js": {"'../utils/BufferGeometryUtils.js'": "'three/addons/utils/BufferGeometryUtils.js'"},
}
# (label, path relative to the export folder, kind) of the pictures linked beside the viewer
MEDIA = (
    ("summary", ExportOutput.SUMMARY, "image"),
    ("input | reconstruction | novel view", ExportOutput.SIDE_BY_SIDE, "video"),
    ("turntable", ExportOutput.TURNTABLE, "video"),
    ("masks", f"../masks/{MasksOutput.OVERLAY_FILE}", "video"),
    ("hand", f"../hand/{HandsOutput.OVERLAY}", "video"),
)
METRIC_STAGES = ("masks", "hand", "fit")


def data_url(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def module_source(filename: str) -> str:
    """A vendored module's text with its relative imports renamed to bare specifiers."""
    text = (VENDOR_DIR / filename).read_text(encoding="utf-8")
    for old, new in RELATIVE_IMPORTS.get(filename, {}).items():
        if old not in text:
            raise RuntimeError(f"vendored {filename} no longer imports {old}; update RELATIVE_IMPORTS")
        text = text.replace(old, new)
    return text


@lru_cache(maxsize=1)
def import_map_json() -> str:
    """The page's import map (JSON text): every bare specifier -> a data: URL of its module."""
    imports = {spec: data_url(module_source(name).encode("utf-8"), "text/javascript")
               for spec, name in MODULE_FILES.items()}
    return json.dumps({"imports": imports})


def scalar_items(summary: dict, prefix: str = "") -> dict[str, float | int | str | bool]:
    """The numbers, words and flags of a stage summary, one level of nesting flattened (``track_iou.hand``);
    paths and lists are left out (they mean nothing on a page)."""
    items = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            items.update(scalar_items(value, f"{name}."))
        elif isinstance(value, (bool, int, float)) or (isinstance(value, str) and "/" not in value):
            items[name] = value
    return items


def clip_metrics(out_root: Path) -> dict[str, dict]:
    """Per section (masks, hand, fit, eval): its scalar results, for the page's metrics table."""
    sections = {}
    for stage in METRIC_STAGES:
        manifest = read_manifest(Path(out_root) / stage) or {}
        if manifest.get("summary"):
            sections[stage] = scalar_items(manifest["summary"])
    evaluation = EvalOutput.load(Path(out_root))
    if evaluation is not None:
        sections["eval"] = scalar_items(evaluation)
    return sections


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_table_html(sections: dict[str, dict]) -> str:
    rows = []
    for section, items in sections.items():
        rows.append(f'<tr><th colspan="2">{html.escape(section)}</th></tr>')
        rows += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(_format_value(v))}</td></tr>"
                 for k, v in items.items()]
    return "<table class=\"metrics\">" + "".join(rows) + "</table>" if rows else "<p>no metrics recorded</p>"


def media_html(media: list[tuple[str, str, str]]) -> str:
    parts = []
    for label, rel, kind in media:
        src = html.escape(rel, quote=True)
        body = (f'<a href="{src}"><img src="{src}" alt="{html.escape(label)}"></a>' if kind == "image"
                else f'<video src="{src}" controls loop muted preload="metadata"></video>')
        parts.append(f"<figure>{body}<figcaption>{html.escape(label)}</figcaption></figure>")
    return "".join(parts)


def render_view_html(title: str, glb: bytes, metrics: dict[str, dict], media: list[tuple[str, str, str]]) -> str:
    """The whole page as text (pure: no file access besides the vendored modules)."""
    values = {"TITLE": html.escape(title), "METRICS": metrics_table_html(metrics), "MEDIA": media_html(media),
              "IMPORTMAP": import_map_json(),
              "GLB": base64.b64encode(glb).decode("ascii")}
    # one pass, so text inserted for one field is never read as another field's placeholder
    return re.sub(r"%([A-Z]+)%", lambda m: values.get(m.group(1), m.group(0)), _PAGE)


def write_clip_view(out_root: Path, export_dir: Path, title: str) -> Path:
    """Write ``export_dir/view.html`` from ``export_dir/interaction.glb`` and the clip's recorded metrics.

    export_dir may be the export stage's temporary folder: media links are relative to it and are
    listed when the file exists there (or, for ``../`` links, in ``out_root``).
    """
    export_dir = Path(export_dir)
    glb = (export_dir / ExportOutput.GLB).read_bytes()
    media = [(label, rel, kind) for label, rel, kind in MEDIA
             if (Path(out_root) / rel[3:] if rel.startswith("../") else export_dir / rel).is_file()]
    page = render_view_html(title, glb, clip_metrics(out_root), media)
    path = export_dir / ExportOutput.VIEW
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>%TITLE% - hoirecon</title>
<style>
  body { margin: 0; font: 14px system-ui, sans-serif; background: #f4f4f4; color: #222;
         display: flex; height: 100vh; }
  #view { flex: 1 1 auto; position: relative; min-width: 0; }
  #view canvas { display: block; width: 100%; height: 100%; }
  #controls { position: absolute; left: 0; right: 0; bottom: 0; display: flex; gap: 8px; align-items: center;
              padding: 8px; background: rgba(255,255,255,.85); }
  #slider { flex: 1; }
  #side { width: 360px; overflow-y: auto; padding: 10px; background: #fff; border-left: 1px solid #ccc; }
  h1 { font-size: 16px; margin: 0 0 8px; }
  table.metrics { border-collapse: collapse; width: 100%; margin-bottom: 10px; }
  table.metrics td, table.metrics th { padding: 2px 4px; text-align: left; border-bottom: 1px solid #eee; }
  table.metrics th { background: #eef; }
  figure { margin: 0 0 10px; } figure img, figure video { width: 100%; }
  figcaption { font-size: 12px; color: #555; }
  #message { position: absolute; top: 8px; left: 8px; color: #a00; }
</style>
<script type="importmap">%IMPORTMAP%</script>
</head>
<body data-state="loading" data-errors="">
<script>
  // Record errors on the page itself, so a headless check can read them from the DOM.
  (function () {
    const note = (text) => {
      const body = document.body;
      body.dataset.errors = (body.dataset.errors ? body.dataset.errors + "\\n" : "") + text;
      body.dataset.state = "error";
    };
    window.addEventListener("error", (e) => note(String(e.message || e)));
    window.addEventListener("unhandledrejection", (e) => note(String(e.reason)));
    const consoleError = console.error.bind(console);
    console.error = (...args) => { note(args.map(String).join(" ")); consoleError(...args); };
  })();
</script>
<div id="view">
  <div id="message"></div>
  <div id="controls">
    <button id="play" type="button">pause</button>
    <input id="slider" type="range" min="0" max="0" value="0" step="1">
    <span id="frame">frame -</span>
  </div>
</div>
<div id="side">
  <h1>%TITLE%</h1>
  %METRICS%
  %MEDIA%
</div>
<script id="glb" type="text/plain">%GLB%</script>
<script type="module">
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const view = document.getElementById('view');
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio);
renderer.setClearColor(0xf4f4f4);
view.prepend(renderer.domElement);
const scene = new THREE.Scene();
scene.add(new THREE.HemisphereLight(0xffffff, 0x667788, 2.0));
const sun = new THREE.DirectionalLight(0xffffff, 1.5);
sun.position.set(1, 2, 3);
scene.add(sun);
const camera = new THREE.PerspectiveCamera(40, 1, 0.001, 100);
const controls = new OrbitControls(camera, renderer.domElement);
const clock = new THREE.Clock();
const slider = document.getElementById('slider');
const playButton = document.getElementById('play');
const frameLabel = document.getElementById('frame');
let mixer = null, times = [0], playing = true;

function resize() {
  const w = view.clientWidth, h = view.clientHeight;
  renderer.setSize(w, h, false);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
}
window.addEventListener('resize', resize);

function frameAt(t) {  // the exported frame shown at animation time t
  let i = 0;
  while (i + 1 < times.length && times[i + 1] <= t + 1e-6) i++;
  return i;
}
function showFrame(i) {
  slider.value = String(i);
  frameLabel.textContent = `frame ${i + 1} / ${times.length}`;
}
playButton.addEventListener('click', () => {
  playing = !playing;
  playButton.textContent = playing ? 'pause' : 'play';
});
slider.addEventListener('input', () => {
  playing = false;
  playButton.textContent = 'play';
  const i = Number(slider.value);
  if (mixer) mixer.setTime(times[i]);
  showFrame(i);
});

function frameObject(root) {  // put the orbit camera where the whole clip is in view
  const box = new THREE.Box3().setFromObject(root);
  const centre = box.getCenter(new THREE.Vector3());
  const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1e-3);
  const distance = radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2));
  camera.position.copy(centre).add(new THREE.Vector3(0, 0, distance));
  camera.near = distance / 100;
  camera.far = distance * 100;
  camera.updateProjectionMatrix();
  controls.target.copy(centre);
  controls.update();
}

function animate() {
  const dt = clock.getDelta();
  if (mixer && playing && times.length > 1) {
    mixer.update(dt);
    showFrame(frameAt(mixer.time % (times[times.length - 1] || 1)));
  }
  controls.update();
  renderer.render(scene, camera);
  requestAnimationFrame(animate);
}

resize();
const b64 = document.getElementById('glb').textContent.trim();
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
new GLTFLoader().parse(bytes.buffer, '', (gltf) => {
  scene.add(gltf.scene);
  if (gltf.animations.length) {
    mixer = new THREE.AnimationMixer(gltf.scene);
    const clip = gltf.animations[0];
    mixer.clipAction(clip).play();
    times = Array.from(clip.tracks[0].times);
  }
  slider.max = String(times.length - 1);
  showFrame(0);
  frameObject(gltf.scene);
  renderer.render(scene, camera);
  animate();
  if (document.body.dataset.state !== 'error') document.body.dataset.state = 'ready';
}, (err) => {
  document.getElementById('message').textContent = 'cannot read the model: ' + err;
  console.error('cannot read the model:', err);
});
</script>
</body>
</html>
"""
