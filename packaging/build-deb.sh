#!/bin/sh
# Build the edge-gateway .deb for Debian 12 / Raspberry Pi OS (bookworm) on this machine's
# architecture: a venv under /opt/edge-gateway made from wheels now (nothing is fetched when the
# package is installed), the systemd unit, the config as a conffile, maintainer scripts that
# create the system user and set modes. Usage: packaging/build-deb.sh [OUTPUT_DIR]
# Needs: Debian's python3 (3.11) with python3-venv, dpkg-dev; pip reaches an index for the wheels.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$SRC/build/deb}" && cd "${1:-$SRC/build/deb}" && pwd)
PYTHON=/usr/bin/python3            # the box's Python: the venv links to it
PREFIX=/opt/edge-gateway
VENV=$PREFIX/.venv

ARCH=$(dpkg --print-architecture)
PYVER=$($PYTHON -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$PYVER" = 3.11 ] || { echo "build-deb: bookworm's Python is 3.11, $PYTHON is $PYVER" >&2; exit 1; }
UPSTREAM=$($PYTHON -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$SRC/pyproject.toml")
VERSION=${DEB_VERSION:-$UPSTREAM-1}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edge-gateway-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root

echo "build-deb: edge-gateway $VERSION for $ARCH"
# 1. The project's own wheel, from a clean copy of the sources (no .venv, no state).
mkdir -p "$WORK/src" "$WORK/wheels"
tar -C "$SRC" --exclude=.venv --exclude=build --exclude=.git --exclude='*-state' \
    --exclude=__pycache__ --exclude='*.egg-info' -cf - . | tar -C "$WORK/src" -xf -
# 2. The venv at its final path inside the staging tree, the wheel and its dependencies in it.
#    Binary wheels are preferred; on armhf, Raspberry Pi OS's pip.conf adds piwheels for them.
$PYTHON -m venv "$STAGE$VENV"
"$STAGE$VENV/bin/pip" install --quiet --disable-pip-version-check --no-compile --prefer-binary \
    "$WORK/src"
"$STAGE$VENV/bin/pip" uninstall --quiet --yes pip setuptools 2>/dev/null || true
"$STAGE$VENV/bin/python" -c 'import gateway.cli, drivers.ocpp, drivers.lorawan, drivers.ble, drivers.serial'
# 3. The venv believes it lives where it was made: point scripts and pyvenv.cfg at /opt.
grep -rlI "$STAGE" "$STAGE$VENV" | while read -r f; do
    sed -i "s#$STAGE##g" "$f"
done
if grep -rlI "$STAGE" "$STAGE$VENV"; then echo "build-deb: staging path left in the files above" >&2; exit 1; fi
# Byte-code compiled now, recorded with its installed path: the hardened unit cannot write
# __pycache__ under /opt (ProtectSystem=strict), and a Pi would otherwise compile every start.
"$STAGE$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / "$STAGE$VENV/lib" >/dev/null
rm -rf "$STAGE$VENV/lib/python3.11/site-packages/"*.dist-info/direct_url.json

# 4. Everything else the package ships.
install -D -m 0644 "$SRC/systemd/edge-gateway.service" "$STAGE/lib/systemd/system/edge-gateway.service"
install -D -m 0640 "$SRC/config/gateway.example.toml" "$STAGE/etc/edge-gateway/gateway.toml"
install -D -m 0644 "$SRC/README.md" "$STAGE$PREFIX/README.md"
install -D -m 0644 "$SRC/config/gateway.example.toml" "$STAGE/usr/share/doc/edge-gateway/examples/gateway.example.toml"
install -D -m 0644 "$SRC/packaging/debian/copyright" "$STAGE/usr/share/doc/edge-gateway/copyright"
mkdir -p "$STAGE/usr/bin"
ln -s "$VENV/bin/edge-gateway" "$STAGE/usr/bin/edge-gateway"

mkdir -p "$STAGE/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$SRC/packaging/debian/$script" "$STAGE/DEBIAN/$script"
done
install -m 0644 "$SRC/packaging/debian/conffiles" "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" \
    "$SRC/packaging/debian/control.in" > "$STAGE/DEBIAN/control"

DEB="$OUT/edge-gateway_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "build-deb: $DEB ($(du -k "$DEB" | cut -f1) KiB, $SIZE KiB installed)"
