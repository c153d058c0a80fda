#!/usr/bin/env bash
# install.sh: build vfio-hookd and install it into a prefix.
#
#   ./install.sh [--prefix DIR] [--no-demo]     install (DESTDIR is honoured for packaging)
#   ./install.sh [--prefix DIR] --uninstall     remove exactly what was installed
#
# This version installs the CLI, vfio-hookctl. The daemon, its units, bus
# policy and the libvirt hook come with the daemon issue; until then this
# script says so rather than pretending. On a machine without VFIO hardware
# (no IOMMU groups) or without systemd, it ends with a demo on a simulated
# host, which changes nothing on this machine.
set -euo pipefail

prefix=/usr/local
uninstall=false
demo=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --uninstall) uninstall=true; shift ;;
    --no-demo) demo=no; shift ;;
    --demo) demo=yes; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be an absolute path, got '$prefix'" >&2; exit 2 ;; esac

destdir=${DESTDIR:-}
libdir="$prefix/lib/vfio-hookd"
bindir="$prefix/bin"
manifest="$destdir$libdir/install-manifest"
src=$(cd "$(dirname "$0")" && pwd)

if $uninstall; then
  if [ ! -f "$manifest" ]; then
    echo "install.sh: nothing to uninstall: no manifest at '$manifest'" >&2
    exit 1
  fi
  # Files first (the manifest lists itself, so read it once), then the
  # folders we made, deepest first, only when empty.
  listed=$(cat "$manifest")
  grep '^f ' <<<"$listed" | cut -c3- | while IFS= read -r f; do rm -f -- "$destdir$f"; done
  grep '^d ' <<<"$listed" | cut -c3- | sort -r | while IFS= read -r d; do rmdir -- "$destdir$d" 2>/dev/null || true; done
  rmdir -- "$destdir$libdir" 2>/dev/null || true
  echo "vfio-hookd removed from $destdir$prefix"
  exit 0
fi

node=$(command -v node || true)
if [ -z "$node" ]; then echo "install.sh: node (>= 20) is not on PATH; install Node.js 20 or newer" >&2; exit 1; fi
node_major=$("$node" -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then echo "install.sh: node $("$node" --version) is too old; vfio-hookd needs Node.js 20 or newer" >&2; exit 1; fi
node=$(readlink -f "$node") # absolute: libvirt and NixOS run hooks with a bare PATH

echo "== building"
cd "$src"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build

echo "== installing into $destdir$prefix"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp package.json package-lock.json "$stage/"
(cd "$stage" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
cp -r dist "$stage/dist"
rm -rf "$stage/dist/test"

# Replace the previous installation's files (idempotent), remember every path.
if [ -f "$manifest" ]; then
  grep '^f ' "$manifest" | cut -c3- | while IFS= read -r f; do rm -f -- "$destdir$f"; done
fi
mkdir -p "$destdir$libdir" "$destdir$bindir"
new_manifest=$(mktemp)
for d in "$prefix/lib" "$libdir" "$bindir"; do echo "d $d" >>"$new_manifest"; done
(cd "$stage" && find dist node_modules package.json -type d) | while IFS= read -r d; do
  mkdir -p "$destdir$libdir/$d"; echo "d $libdir/$d" >>"$new_manifest"
done
(cd "$stage" && find dist node_modules package.json \( -type f -o -type l \)) | while IFS= read -r f; do
  cp -P "$stage/$f" "$destdir$libdir/$f"; echo "f $libdir/$f" >>"$new_manifest"
done
cat >"$destdir$bindir/vfio-hookctl" <<EOF
#!/bin/sh
exec '$node' '$libdir/dist/service/vfio-hookctl.js' "\$@"
EOF
chmod 0755 "$destdir$bindir/vfio-hookctl"
echo "f $bindir/vfio-hookctl" >>"$new_manifest"
mv "$new_manifest" "$manifest"
echo "f $libdir/install-manifest" >>"$manifest"
echo "installed: $destdir$bindir/vfio-hookctl"
echo "note: the vfio-hookd daemon, its units and the libvirt hook are not part of this version yet; vfio-hookctl works on its own."

has_vfio_host=false
if [ -d /sys/kernel/iommu_groups ] && [ -n "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]; then has_vfio_host=true; fi
has_systemd=false
[ -d /run/systemd/system ] && has_systemd=true

if [ "$demo" = yes ] || { [ "$demo" = auto ] && { ! $has_vfio_host || ! $has_systemd; }; }; then
  echo
  echo "== demo on a simulated host (this machine has $($has_vfio_host && echo "IOMMU groups" || echo "no IOMMU groups") and $($has_systemd && echo "systemd" || echo "no systemd as PID 1"); nothing here touches its devices)"
  sim=$(mktemp -d)
  hookctl=("$node" "$src/dist/service/vfio-hookctl.js" --simulate reference-host --sim-dir "$sim/host")
  run() { echo "\$ vfio-hookctl --simulate reference-host $*"; "${hookctl[@]}" "$@" || true; echo; }
  run devices
  run detach 0000:0b:00.0 --for win10
  run devices
  run detach 0000:01:00.0 --for win10
  run reattach 0000:0b:00.0 --for win10
  rm -rf "$sim"
  echo "Try it yourself: vfio-hookctl --simulate reference-host devices   (hosts: reference-host, single-gpu-host, nvidia-host, split-board-host)"
fi
