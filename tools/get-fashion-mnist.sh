#!/usr/bin/env bash
# Makes sure the Fashion-MNIST idx files are where kerasbnn.data reads them: run by `make data`
# (which `make demo` runs first) and by .ci/run.
#
# Looks for the four *-idx?-ubyte.gz files in $KERASBNN_DATA_DIR, by default
# /usr/share/datasets/fashion-mnist, where Debian's `dataset-fashion-mnist` package puts them.
# When one is missing, installs that package with apt-get: directly as root, through sudo
# otherwise (sudo may ask for your password). Where that cannot work (no apt-get, not root and
# no sudo, apt-get failing) it prints the command to run and exits 1.
#
# Only the idx files count: a copy prepared by tensorflow-datasets (~/tensorflow_datasets) is
# not looked for. With such a copy, run the demo's command directly:
#   .venv/bin/kerasbnn pipeline --config examples/configs/demo.yaml --resume
set -u

PACKAGE=dataset-fashion-mnist
DEBIAN_DIR=/usr/share/datasets/fashion-mnist
DIR=${KERASBNN_DATA_DIR:-$DEBIAN_DIR}
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
       t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
URL=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com

# True when every idx file is in $DIR and not empty.
files_present() {
  local file
  for file in "${FILES[@]}"; do
    [ -s "$DIR/$file" ] || return 1
  done
}

# Prints why ($1) and the command to run ($2) on stderr, then exits 1.
give_up() {
  {
    echo "Fashion-MNIST is not in $DIR: $1."
    echo "Run this, then try again:"
    echo "    $2"
  } >&2
  exit 1
}

# Runs "$@" as root: directly when root, through sudo otherwise.
as_root() {
  if [ -z "$SUDO" ]; then
    DEBIAN_FRONTEND=noninteractive "$@"
  else
    sudo DEBIAN_FRONTEND=noninteractive "$@"
  fi
}

if files_present; then
  echo "Fashion-MNIST: found in $DIR"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  give_up "this system has no apt-get to install Debian's $PACKAGE; download the files" \
    "mkdir -p ~/fashion-mnist && (cd ~/fashion-mnist && curl -fL --fail-early \
--remote-name-all ${FILES[*]/#/$URL/}) && export KERASBNN_DATA_DIR=~/fashion-mnist"
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo "; fi
if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
  give_up "not root and no sudo to install $PACKAGE" \
    "su -c 'apt-get update && apt-get install -y $PACKAGE'"
fi
echo "Fashion-MNIST: installing Debian's $PACKAGE with ${SUDO}apt-get"
as_root apt-get update -qq ||
  echo "apt-get update failed; trying the install with the current package lists" >&2
if ! as_root apt-get install -y -qq "$PACKAGE"; then
  give_up "${SUDO}apt-get install $PACKAGE failed (see above)" \
    "${SUDO}apt-get update && ${SUDO}apt-get install -y $PACKAGE"
fi
if ! files_present; then
  give_up "$PACKAGE is installed, in $DEBIAN_DIR, but KERASBNN_DATA_DIR points elsewhere" \
    "unset KERASBNN_DATA_DIR"
fi
echo "Fashion-MNIST: installed in $DIR"
