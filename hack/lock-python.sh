#!/usr/bin/env bash
# Resolve requirements.in into requirements.txt, the one lock of criops' Python
# toolchain (make bootstrap's venv, the operator image).
#   hack/lock-python.sh            keep every pin requirements.txt has, resolve only
#                                  what requirements.in gained
#   hack/lock-python.sh --upgrade  resolve everything afresh (the newest versions
#                                  the package index serves)
# Run with the Python the project runs on (python3 on PATH, or $PYTHON).
. "$(dirname "$0")/lib.sh"
cd "$CRIOPS_ROOT"
export PIP_CACHE_DIR="$CRIOPS_CACHE/pip" PIP_DISABLE_PIP_VERSION_CHECK=1

constraints=(-c requirements.txt)
case ${1:-} in
  --upgrade) constraints=() ;;
  "") ;;
  *) die "usage: $0 [--upgrade]" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
log "resolving requirements.in${constraints[*]:+ within the pins of requirements.txt}"
"$work/venv/bin/pip" install -q -r requirements.in "${constraints[@]}"
{
  echo "# criops Python toolchain, fully pinned: the resolved lock of requirements.in"
  echo "# (pip freeze on Python $("$work/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')). Regenerate with hack/lock-python.sh."
  "$work/venv/bin/pip" freeze --exclude-editable
} >"$work/requirements.txt"
mv "$work/requirements.txt" requirements.txt
log "requirements.txt: $(grep -vc '^#' requirements.txt) packages pinned"
