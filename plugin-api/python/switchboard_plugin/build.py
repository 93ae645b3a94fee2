"""One-command build of a Python plugin into a WebAssembly component.

    python -m switchboard_plugin.build PLUGIN_DIR OUT.wasm [--entry plugin] [--world WORLD]

(or ``plugin-api/python/build.sh PLUGIN_DIR OUT.wasm``). Generates the bindings of the world
from ``plugin-api/wit`` into a temporary directory (never committed), adds the SDK's glue, and
runs ``componentize-py`` (pinned: :data:`COMPONENTIZE_PY_VERSION`) over the plugin directory.
The entry module (``plugin.py`` by default) must export a class with
``@switchboard_plugin.export``: a :class:`~switchboard_plugin.Session` (world
``realtime-plugin``), :class:`~switchboard_plugin.stages.Recognizer` (``stt-plugin``),
:class:`~switchboard_plugin.stages.Conversation` (``llm-plugin``) or
:class:`~switchboard_plugin.stages.Synthesizer` (``tts-plugin``).

The world: ``--world`` when given, else the exported class's — found by importing the entry
module under this Python (so that import must work outside a component: the SDK's own imports
do). A plugin must not have top-level modules named ``switchboard_app``, ``realtime``, ``stt``,
``llm`` or ``tts`` (the glue's).

componentize-py is found at ``$SWITCHBOARD_COMPONENTIZE_PY``, else in the tools directory
``scripts/setup`` installs (``${SWITCHBOARD_TOOLS:-<repo>/target/tools}/python``), else on
``PATH``. Exit status 2 when it is missing (run ``scripts/setup``), 1 when the build fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

COMPONENTIZE_PY_VERSION = "0.25.1"
"""The componentize-py release this SDK is built and tested with (PyPI)."""

SDK_DIR = Path(__file__).resolve().parent.parent
"""``plugin-api/python``: the directory holding the ``switchboard_plugin`` package."""
REPO = SDK_DIR.parent.parent
WIT_DIR = REPO / "plugin-api" / "wit"
WORLDS = {
    "realtime-plugin": ("_realtime", "Realtime", "realtime", "Session"),
    "stt-plugin": ("_stt", "Stt", "stt", "Recognizer"),
    "llm-plugin": ("_llm", "Llm", "llm", "Conversation"),
    "tts-plugin": ("_tts", "Tts", "tts", "Synthesizer"),
}
"""Worlds the SDK has glue for: world → (glue module in the SDK, its app class, the exported
interface — the module componentize-py imports the resource from — and its resource class)."""


class BuildError(Exception):
    """The build failed; the message says why."""


def componentize_py() -> List[str]:
    """The command that runs componentize-py: ``$SWITCHBOARD_COMPONENTIZE_PY``, else the copy
    ``scripts/setup`` installs with ``pip install --target`` into
    ``${SWITCHBOARD_TOOLS:-<repo>/target/tools}/python`` (run with this Python), else ``PATH``'s.

    Raises:
        BuildError: none found (the message says to run scripts/setup).
    """
    explicit = os.environ.get("SWITCHBOARD_COMPONENTIZE_PY")
    if explicit:
        return [explicit]
    tools = Path(os.environ.get("SWITCHBOARD_TOOLS") or REPO / "target" / "tools") / "python"
    if (tools / "componentize_py" / "__init__.py").exists():
        return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tools)!r}); "
                "from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())"]
    found = shutil.which("componentize-py")
    if found:
        return [found]
    raise BuildError(
        f"componentize-py {COMPONENTIZE_PY_VERSION} not found (looked in {tools} and PATH): "
        "run scripts/setup, or pip install componentize-py==" + COMPONENTIZE_PY_VERSION
    )


def _run(cmd: List[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        # componentize-py prints a long native backtrace after the Python traceback: keep the
        # Python part (what the author can act on).
        text = (out.stderr or out.stdout).split("\nStack backtrace:")[0]
        raise BuildError(f"componentize-py {' '.join(a for a in cmd if a in ('bindings', 'componentize'))} failed:\n{text.strip()}")


def detect_world(plugin_dir: Path, entry: str = "plugin") -> str:
    """The world of the class ``entry`` exports, found by importing it in a child Python (with
    the plugin directory and the SDK on its path, bytecode not written).

    Raises:
        BuildError: the entry module does not import, or exports no plugin class (the message
            says to pass ``--world`` if the import cannot work outside a component).
    """
    probe = (
        "import importlib, sys\n"
        f"importlib.import_module({entry!r})\n"
        "from switchboard_plugin.session import exported\n"
        "print(exported()[1].WORLD)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_dir), str(SDK_DIR)]), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=plugin_dir, env=env)
    world = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
    if not world or world[0] not in WORLDS:
        why = (out.stderr.strip().splitlines() or ["no world printed"])[-1]
        raise BuildError(
            f"{plugin_dir}: cannot tell the plugin's world by importing {entry} ({why}); "
            f"pass --world ({', '.join(WORLDS)})"
        )
    return world[0]


def build(plugin_dir: Path, out: Path, entry: str = "plugin", world: Optional[str] = None) -> str:
    """Builds ``plugin_dir`` (entry module ``entry``) into the component ``out`` for ``world``
    (default: the exported class's, :func:`detect_world`); returns the world built.

    Raises:
        BuildError: componentize-py is missing, the plugin has no entry module, its world is
            unknown, or the build failed (its Python traceback is in the message).
    """
    if world is not None and world not in WORLDS:
        raise BuildError(f"world {world!r} is not supported by the Python SDK (supported: {', '.join(WORLDS)})")
    if not (plugin_dir / f"{entry}.py").exists() and not (plugin_dir / entry / "__init__.py").exists():
        raise BuildError(f"{plugin_dir}: no entry module {entry}.py")
    world = world or detect_world(plugin_dir, entry)
    glue_module, app_class, interface, resource_class = WORLDS[world]
    tool = componentize_py()
    with tempfile.TemporaryDirectory(prefix="switchboard-py-build-") as tmp:
        gen = Path(tmp) / "bindings"
        glue = Path(tmp) / "glue"
        glue.mkdir()
        _run([*tool, "-d", str(WIT_DIR), "-w", world, "bindings", str(gen)])
        (glue / "switchboard_app.py").write_text(
            f"import {entry}  # noqa: F401 — registers the plugin's class\n"
            f"from switchboard_plugin.{glue_module} import {app_class}  # noqa: F401\n"
        )
        (glue / f"{interface}.py").write_text(
            f"from switchboard_plugin.{glue_module} import {resource_class}  # noqa: F401\n"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [*tool, "-d", str(WIT_DIR), "-w", world, "componentize",
             "-p", str(plugin_dir), "-p", str(SDK_DIR), "-p", str(gen), "-p", str(glue),
             "switchboard_app", "-o", str(out)]
        )
    return world


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m switchboard_plugin.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("plugin_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--entry", default="plugin", help="entry module (default: plugin)")
    parser.add_argument(
        "--world", choices=list(WORLDS), help="the world to build (default: the exported class's)"
    )
    args = parser.parse_args(argv)
    try:
        build(args.plugin_dir.resolve(), args.out.resolve(), args.entry, args.world)
    except BuildError as e:
        print(f"switchboard_plugin.build: error: {e}", file=sys.stderr)
        return 2 if "not found" in str(e) and "componentize-py" in str(e) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
