#!/usr/bin/env bash
# install.sh: build vfio-hookd and install it, then enable and start it.
#
#   ./install.sh [--prefix DIR] [--hooks-dir DIR] [--no-demo]   install (DESTDIR is honoured for packaging)
#   ./install.sh [--prefix DIR] --uninstall                      remove exactly what was installed
#
# Installs: the daemon, the agent and vfio-hookctl (under PREFIX/lib/vfio-hookd,
# with PREFIX/bin/vfio-hookctl and PREFIX/sbin/vfio-hookd), the systemd unit
# (/etc/systemd/system), the user units (/etc/systemd/user: the agent, enabled
# for every user, and looking-glass-client@/scream-receiver@), the D-Bus policy (/etc/dbus-1/system.d) and
# activation file (PREFIX/share/dbus-1/system-services), the libvirt hook
# (/etc/libvirt/hooks/qemu.d/vfio-hookd; libvirt 6.5+ runs every executable
# there, so a qemu hook of your own stays untouched; NixOS:
# /var/lib/libvirt/hooks/qemu.d), and an example configuration.
#
# With systemd as PID 1 it enables and starts vfio-hookd.service. Without it
# (a container, a CI box) it installs the files and shows a demo: the daemon
# on a private bus and a simulated host, driven by the installed hook.
set -euo pipefail

prefix=/usr/local
hooks_dir=
uninstall=false
demo=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --hooks-dir) hooks_dir=${2:?--hooks-dir needs a directory}; shift 2 ;;
    --hooks-dir=*) hooks_dir=${1#--hooks-dir=}; shift ;;
    --uninstall) uninstall=true; shift ;;
    --no-demo) demo=no; shift ;;
    --demo) demo=yes; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be an absolute path, got '$prefix'" >&2; exit 2 ;; esac
if [ -z "$hooks_dir" ]; then
  # NixOS keeps libvirt's hooks under /var/lib (its /etc/libvirt/hooks is read-only).
  if [ -e /etc/NIXOS ]; then hooks_dir=/var/lib/libvirt/hooks/qemu.d; else hooks_dir=/etc/libvirt/hooks/qemu.d; fi
fi

destdir=${DESTDIR:-}
libdir="$prefix/lib/vfio-hookd"
bindir="$prefix/bin"
sbindir="$prefix/sbin"
unitdir=/etc/systemd/system
userunitdir=/etc/systemd/user
policydir=/etc/dbus-1/system.d
activationdir="$prefix/share/dbus-1/system-services"
docdir="$prefix/share/doc/vfio-hookd"
manifest="$destdir$libdir/install-manifest"
src=$(cd "$(dirname "$0")" && pwd)
has_systemd=false
[ -d /run/systemd/system ] && [ -z "$destdir" ] && has_systemd=true

if $uninstall; then
  if [ ! -f "$manifest" ]; then
    echo "install.sh: nothing to uninstall: no manifest at '$manifest'" >&2
    exit 1
  fi
  if $has_systemd; then
    systemctl disable --now vfio-hookd.service 2>/dev/null || true
    systemctl --global disable vfio-hookd-agent.service 2>/dev/null || true
  fi
  # Files first (the manifest lists itself, so read it once), then the
  # folders we made, deepest first, only when empty.
  listed=$(cat "$manifest")
  grep '^f ' <<<"$listed" | cut -c3- | while IFS= read -r f; do rm -f -- "$destdir$f"; done
  grep '^d ' <<<"$listed" | cut -c3- | sort -ru | while IFS= read -r d; do rmdir -- "$destdir$d" 2>/dev/null || true; done
  if $has_systemd; then systemctl daemon-reload; fi
  echo "vfio-hookd removed from $destdir$prefix (configuration in /etc/vfio-hookd, if any, is yours and stays)"
  exit 0
fi

node=$(command -v node || true)
if [ -z "$node" ]; then echo "install.sh: node (>= 20) is not on PATH; install Node.js 20 or newer" >&2; exit 1; fi
node_major=$("$node" -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then echo "install.sh: node $("$node" --version) is too old; vfio-hookd needs Node.js 20 or newer" >&2; exit 1; fi
node=$(readlink -f "$node") # absolute: libvirt and NixOS run hooks with a bare PATH
busctl=$(command -v busctl || true)
if [ -z "$busctl" ]; then echo "install.sh: busctl (systemd) is not on PATH; the libvirt hook needs it" >&2; exit 1; fi
busctl=$(readlink -f "$busctl")

echo "== building"
cd "$src"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build

echo "== installing into ${destdir:-/}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp package.json package-lock.json README.md "$stage/"
(cd "$stage" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
cp -r dist "$stage/dist"
rm -rf "$stage/dist/test"

# Replace the previous installation's files (idempotent), remember every path.
# Folders an earlier run made stay ours: carry them over to the new manifest.
new_manifest=$(mktemp)
if [ -f "$manifest" ]; then
  grep '^d ' "$manifest" >>"$new_manifest" || true
  grep '^f ' "$manifest" | cut -c3- | while IFS= read -r f; do rm -f -- "$destdir$f"; done
fi
# put_dir DIR: make it (and record it) unless it exists already, so uninstall removes only ours.
put_dir() {
  local d=$1 parent
  [ -d "$destdir$d" ] && return 0
  if [ "$d" = / ]; then mkdir -p "$destdir/"; return 0; fi
  parent=$(dirname "$d")
  put_dir "$parent"
  mkdir -p "$destdir$d"
  echo "d $d" >>"$new_manifest"
}
# put_file MODE DEST < content
put_file() {
  put_dir "$(dirname "$2")"
  cat >"$destdir$2"
  chmod "$1" "$destdir$2"
  echo "f $2" >>"$new_manifest"
}

put_dir "$libdir"
(cd "$stage" && find dist node_modules -type d) | while IFS= read -r d; do
  mkdir -p "$destdir$libdir/$d"; echo "d $libdir/$d" >>"$new_manifest"
done
(cd "$stage" && find dist node_modules package.json README.md \( -type f -o -type l \)) | while IFS= read -r f; do
  cp -P "$stage/$f" "$destdir$libdir/$f"; echo "f $libdir/$f" >>"$new_manifest"
done

put_file 0755 "$bindir/vfio-hookctl" <<EOF
#!/bin/sh
exec '$node' '$libdir/dist/service/vfio-hookctl.js' "\$@"
EOF
put_file 0755 "$sbindir/vfio-hookd" <<EOF
#!/bin/sh
exec '$node' '$libdir/dist/service/vfio-hookd.js' "\$@"
EOF
sed -e "s|@NODE@|$node|g" -e "s|@LIBDIR@|$libdir|g" units/vfio-hookd.service.in | put_file 0644 "$unitdir/vfio-hookd.service"
# The per-user agent and the units it starts, for every user's own manager.
sed -e "s|@NODE@|$node|g" -e "s|@LIBDIR@|$libdir|g" units/vfio-hookd-agent.service.in | put_file 0644 "$userunitdir/vfio-hookd-agent.service"
put_file 0644 "$userunitdir/looking-glass-client@.service" <units/looking-glass-client@.service
put_file 0644 "$userunitdir/scream-receiver@.service" <units/scream-receiver@.service
put_file 0644 "$policydir/org.vfiohookd1.conf" <units/org.vfiohookd1.conf
put_file 0644 "$activationdir/org.vfiohookd1.service" <units/org.vfiohookd1.service
put_file 0644 "$docdir/vfio-hookd.toml.example" <lib/config/example.toml
# The hook with the absolute busctl (NixOS hooks get no useful PATH).
sed -e "s|^BUSCTL=.*|BUSCTL='$busctl'|" hooks/qemu | put_file 0755 "$hooks_dir/vfio-hookd"

mv "$new_manifest" "$manifest"
echo "f $libdir/install-manifest" >>"$manifest"
echo "installed: vfio-hookd, vfio-hookctl, $unitdir/vfio-hookd.service, the bus policy, the hook $hooks_dir/vfio-hookd,"
echo "           the user units vfio-hookd-agent.service, looking-glass-client@.service, scream-receiver@.service in $userunitdir"
echo "configure: /etc/vfio-hookd/vfio-hookd.toml (example: $docdir/vfio-hookd.toml.example); it is re-read on change"

if $has_systemd; then
  systemctl daemon-reload
  systemctl enable --now vfio-hookd.service
  # Every user's manager starts the agent at login (a running session gets it at its next login).
  systemctl --global enable vfio-hookd-agent.service
  systemctl --no-pager --lines=0 status vfio-hookd.service || true
  echo
  echo "libvirtd looks for hooks only when it starts: restart it once (systemctl restart libvirtd) so it runs $hooks_dir/vfio-hookd."
fi

has_vfio_host=false
if [ -d /sys/kernel/iommu_groups ] && [ -n "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]; then has_vfio_host=true; fi
if [ "$demo" = yes ] || { [ "$demo" = auto ] && [ -z "$destdir" ] && { ! $has_vfio_host || ! $has_systemd; }; }; then
  echo
  echo "== demo on a simulated host (this machine has $($has_vfio_host && echo "IOMMU groups" || echo "no IOMMU groups") and $($has_systemd && echo "systemd" || echo "no systemd as PID 1"); nothing here touches its devices)"
  bash "$src/service/demo.sh" "$node" "$src"
fi
