#!/usr/bin/env bash
# Builds a Python Switchboard plugin into a WebAssembly component:
#   plugin-api/python/build.sh PLUGIN_DIR OUT.wasm [--entry plugin] [--world WORLD]
# WORLD: realtime-plugin, stt-plugin, llm-plugin or tts-plugin; by default the one of the class
# the entry module exports with @switchboard_plugin.export.
# Needs componentize-py 0.25.1 (scripts/setup installs it under target/tools/python).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHONPATH="${here}${PYTHONPATH:+:${PYTHONPATH}}" exec python3 -m switchboard_plugin.build "$@"
