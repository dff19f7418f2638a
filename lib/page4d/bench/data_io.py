"""What reading and generating scenes costs: the real capture's load and the default synthetic scene's
render + write + load, timed interleaved in one process (the wall-clock checks that used to live in the
tests belong here).

`load_scene` of the real capture (when `../shared/data/mv_scene` or `scene` exists) and of a freshly
generated default scene (8 times x 4 views, 168x224) are timed round by round; the generator's render and
write are timed once per round as well. Reported: median seconds and the ratio generate / load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from page4d.data import SyntheticSceneConfig, load_scene, render_synthetic_scene
from page4d.data.synthetic import write_synthetic_scene
from page4d.profiling import median, progress, resolve_timer, table, time_interleaved


def _default_real_scene() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / "mv_scene"
        if candidate.is_dir():
            return candidate
    return None


def run(
    repeats: int = 3,
    scene: str | None = None,
    synthetic: dict[str, Any] | None = None,
    device: str = "cpu",
    timer: str | None = None,
) -> dict[str, Any]:
    timer = resolve_timer(timer, device)
    real = Path(scene) if scene else _default_real_scene()
    config = SyntheticSceneConfig(**(synthetic or {}))
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def generate() -> None:
            write_synthetic_scene(render_synthetic_scene(config), Path(tmp) / f"s{next(counter)}")

        generate()
        fns = {
            "generate (render + write)": generate,
            "load synthetic": lambda: load_scene(Path(tmp) / "s0", load_tracks=False),
        }
        if real is not None:
            fns["load real capture"] = lambda: load_scene(real)
        progress(f"[data] {list(fns)}, {repeats} interleaved rounds")
        times = time_interleaved(fns, repeats, timer, device)
    med = {k: median(v) for k, v in times.items()}
    return {
        "benchmark": "data",
        "timer": timer,
        "repeats": repeats,
        "real_scene": str(real) if real is not None else None,
        "synthetic": {"times": config.times, "views": config.views, "size": [config.height, config.width]},
        "seconds": med,
        "generate_over_load": med["generate (render + write)"] / med["load synthetic"],
    }


def format_result(result: dict[str, Any]) -> str:
    rows = [[k, f"{v:.3f}"] for k, v in result["seconds"].items()]
    syn = result["synthetic"]
    return "\n".join(
        [
            f"scene I/O: synthetic {syn['times']} times x {syn['views']} views at {syn['size'][0]}x"
            f"{syn['size'][1]}; real capture: {result['real_scene'] or 'not found'}; "
            f"{result['repeats']} interleaved rounds ({result['timer']} time)",
            table(["what", "median s"], rows),
            f"generating a scene costs {result['generate_over_load']:.1f}x loading it",
        ]
    )
