#!/usr/bin/env bash
# install.sh: build vfio-hookd and install it, then enable and start it.
#
#   ./install.sh [--prefix DIR] [--hooks-dir DIR] [--no-demo]   install (DESTDIR is honoured for packaging)
#   ./install.sh [--prefix DIR] --uninstall                      remove exactly what was installed
#   ./install.sh --layout DIR                                    files only, in a package's layout (nix/package.nix)
#   common: [--prebuilt] (install dist/ and node_modules/ as they are) [--node PATH] [--busctl PATH]
#
# Installs: the daemon, the agent and vfio-hookctl (under PREFIX/lib/vfio-hookd,
# with PREFIX/bin/vfio-hookctl and PREFIX/sbin/vfio-hookd), the systemd unit
# (/etc/systemd/system), the user units (/etc/systemd/user: the agent, enabled
# for every user, and looking-glass-client@/scream-receiver@), the D-Bus policy (/etc/dbus-1/system.d) and
# activation file (PREFIX/share/dbus-1/system-services), the libvirt hook
# (/etc/libvirt/hooks/qemu.d/vfio-hookd; libvirt 6.5+ runs every executable
# there, so a qemu hook of your own stays untouched), and an example configuration.
# A failed install removes what it wrote. On NixOS it refuses: use the module.
#
# With systemd as PID 1 it enables and starts vfio-hookd.service. Without it
# (a container, a CI box) it installs the files and shows a demo: the daemon
# on a private bus and a simulated host, driven by the installed hook.
#
# --layout DIR writes the same files into DIR the way a package holds them:
# DIR/lib/systemd/{system,user}, DIR/share/dbus-1/{system.d,system-services},
# DIR/libexec/vfio-hookd/vfio-hookd (the hook), DIR/bin/{vfio-hookd,vfio-hookctl},
# DIR/lib/vfio-hookd (the app), DIR/share/doc/vfio-hookd. Nothing is enabled,
# nothing goes to /etc, no manifest is kept: DIR must be new or empty.
set -euo pipefail

prefix=/usr/local
prefix_given=false
hooks_dir=
uninstall=false
demo=auto
layout=
prebuilt=false
node=
busctl=
usage_error() { echo "install.sh: $* (try --help)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; prefix_given=true; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; prefix_given=true; shift ;;
    --hooks-dir) hooks_dir=${2:?--hooks-dir needs a directory}; shift 2 ;;
    --hooks-dir=*) hooks_dir=${1#--hooks-dir=}; shift ;;
    --layout) layout=${2:?--layout needs a directory}; shift 2 ;;
    --layout=*) layout=${1#--layout=}; [ -n "$layout" ] || usage_error "--layout needs a directory"; shift ;;
    --node) node=${2:?--node needs the path of node}; shift 2 ;;
    --node=*) node=${1#--node=}; shift ;;
    --busctl) busctl=${2:?--busctl needs the path of busctl}; shift 2 ;;
    --busctl=*) busctl=${1#--busctl=}; shift ;;
    --prebuilt) prebuilt=true; shift ;;
    --uninstall) uninstall=true; shift ;;
    --no-demo) demo=no; shift ;;
    --demo) demo=yes; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown option '$1'" ;;
  esac
done
destdir=${DESTDIR:-}

# NixOS builds /etc from its configuration (links into the store), its dbus
# reads only services.dbus.packages and libvirtd-config.service deletes any
# hook it did not link itself: an install here would be half-dead at the next
# boot. Checked first, so nothing is written. DESTDIR is the target's root.
if ! $uninstall && [ -z "$layout" ] && [ -e "$destdir/etc/NIXOS" ]; then
  echo "install.sh: '$destdir/etc/NIXOS' exists: on NixOS vfio-hookd comes from its module (services.vfio-hookd in this repository's flake.nix, see README.md's NixOS section), not from install.sh, refusing" >&2
  exit 1
fi

case "$prefix" in /*) ;; *) usage_error "--prefix must be an absolute path, got '$prefix'" ;; esac
if [ -n "$layout" ]; then
  case "$layout" in /*) ;; *) usage_error "--layout must be an absolute path (the units name it), got '$layout'" ;; esac
  $uninstall && usage_error "--layout and --uninstall do not mix: a layout has no manifest; remove the folder '$layout' instead"
  $prefix_given && usage_error "--layout and --prefix do not mix: with --layout every file goes under '$layout'"
  [ -z "$hooks_dir" ] || usage_error "--layout and --hooks-dir do not mix: the hook goes to '$layout/libexec/vfio-hookd'"
  [ -z "$destdir" ] || usage_error "--layout and DESTDIR do not mix: --layout '$layout' is already where the files go"
  if [ -e "$layout" ] && { [ ! -d "$layout" ] || [ -n "$(ls -A "$layout")" ]; }; then
    echo "install.sh: --layout '$layout' exists and is not an empty folder; give a new or empty one, refusing" >&2
    exit 1
  fi
fi

# Where each file goes. The two modes differ only in these folders; the list
# of files below (install_files) is the same for both.
if [ -n "$layout" ]; then
  libdir="$layout/lib/vfio-hookd"
  bindir="$layout/bin"
  sbindir="$layout/bin"
  unitdir="$layout/lib/systemd/system"
  userunitdir="$layout/lib/systemd/user"
  policydir="$layout/share/dbus-1/system.d"
  activationdir="$layout/share/dbus-1/system-services"
  docdir="$layout/share/doc/vfio-hookd"
  catalogdir="$layout/lib/systemd/catalog"
  hooks_dir="$layout/libexec/vfio-hookd"
else
  libdir="$prefix/lib/vfio-hookd"
  bindir="$prefix/bin"
  sbindir="$prefix/sbin"
  unitdir=/etc/systemd/system
  userunitdir=/etc/systemd/user
  policydir=/etc/dbus-1/system.d
  activationdir="$prefix/share/dbus-1/system-services"
  docdir="$prefix/share/doc/vfio-hookd"
  # journalctl -x reads catalogs from /usr/local/lib/systemd/catalog and /usr/lib/systemd/catalog
  # (systemd 252's catalog.c): the default prefix is one of them; /usr may be read-only.
  catalogdir="$prefix/lib/systemd/catalog"
  [ -n "$hooks_dir" ] || hooks_dir=/etc/libvirt/hooks/qemu.d
fi
manifest="$destdir$libdir/install-manifest"
src=$(cd "$(dirname "$0")" && pwd)
has_systemd=false
[ -d /run/systemd/system ] && [ -z "$destdir" ] && [ -z "$layout" ] && has_systemd=true

# The manifest's paths (one a line) under DESTDIR, NUL-separated for xargs -0: one rm or rmdir for
# ~1,500 files instead of a fork each (a loaded machine took over a minute for a loop of them).
under_dest() { D=$destdir awk '{ print ENVIRON["D"] $0 }' | tr '\n' '\0'; }

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
  # rmdir goes on past a folder that is not empty.
  grep '^f ' <<<"$listed" | cut -c3- | under_dest | xargs -0 -r rm -f --
  grep '^d ' <<<"$listed" | cut -c3- | sort -ru | under_dest | xargs -0 -r rmdir -- 2>/dev/null || true
  if $has_systemd; then systemctl daemon-reload; fi
  echo "vfio-hookd removed from $destdir$prefix (configuration in /etc/vfio-hookd, if any, is yours and stays)"
  exit 0
fi

if [ -z "$node" ]; then
  node=$(command -v node || true)
  if [ -z "$node" ]; then echo "install.sh: node (>= 20) is not on PATH; install Node.js 20 or newer, or give --node PATH" >&2; exit 1; fi
fi
if ! node_major=$("$node" -p 'process.versions.node.split(".")[0]' 2>/dev/null); then
  echo "install.sh: cannot run node '$node'; give the path of Node.js 20 or newer with --node" >&2
  exit 1
fi
if [ "$node_major" -lt 20 ]; then echo "install.sh: node $("$node" --version) is too old; vfio-hookd needs Node.js 20 or newer" >&2; exit 1; fi
node=$(readlink -f "$(command -v "$node")") # absolute: libvirt and NixOS run hooks with a bare PATH
if [ -z "$busctl" ]; then
  busctl=$(command -v busctl || true)
  if [ -z "$busctl" ]; then echo "install.sh: busctl (systemd) is not on PATH; the libvirt hook needs it (or give --busctl PATH)" >&2; exit 1; fi
fi
case "$busctl" in /*) ;; *) busctl=$(command -v "$busctl" || echo "$busctl") ;; esac
[ -x "$busctl" ] || { echo "install.sh: busctl '$busctl' is not an executable file; give the path of systemd's busctl with --busctl" >&2; exit 1; }
busctl=$(readlink -f "$busctl")
if $prebuilt && { [ ! -f "$src/dist/bin/vfio-hookd.js" ] || [ ! -d "$src/node_modules" ]; }; then
  echo "install.sh: --prebuilt needs '$src/dist' (npm run build) and '$src/node_modules' (production dependencies), missing, refusing" >&2
  exit 1
fi

# Every folder a file goes to must be writable (or creatable) before the
# first write: a read-only /etc/systemd/system or a folder of someone else
# is a refusal, not a half-installed system.
for d in "$libdir" "$bindir" "$sbindir" "$unitdir" "$userunitdir" "$policydir" "$activationdir" "$docdir" "$catalogdir" "$hooks_dir"; do
  p="$destdir$d"
  while [ ! -e "$p" ] && [ ! -L "$p" ]; do p=$(dirname "$p"); done
  if [ ! -d "$p" ]; then
    echo "install.sh: cannot install into '$destdir$d': '$p' is not a folder, refusing" >&2
    exit 1
  fi
  if [ ! -w "$p" ]; then
    echo "install.sh: cannot install into '$destdir$d': '$p' is not writable (a read-only file system, or not yours; run as root or set DESTDIR), refusing" >&2
    exit 1
  fi
done

# What this run wrote ("d DIR", "f FILE" relative to DESTDIR), in a temporary
# file until the install is done; it becomes the manifest then. A failure (or
# a signal) before that removes every listed file and every listed folder
# left empty, and no temporary file outlives the script.
journal=$(mktemp "${TMPDIR:-/tmp}/vfio-hookd-install.XXXXXXXXXX")
stage=
errfile=
replaced=
finished=false
rollback() {
  local files dirs
  files=$(grep -c '^f ' "$journal" || true)
  dirs=$(grep -c '^d ' "$journal" || true)
  # Only files (and links): a folder in a file's place was not ours, and rm without -r leaves it.
  grep '^f ' "$journal" | cut -c3- | under_dest | xargs -0 -r rm -f -- 2>/dev/null || true
  grep '^d ' "$journal" | cut -c3- | sort -ru | under_dest | xargs -0 -r rmdir -- 2>/dev/null || true
  echo "install.sh: the install failed; removed the $files files and $dirs folders it had written${replaced:+ (the earlier installation it was replacing is gone too)}; fix the cause and run install.sh again" >&2
}
on_exit() {
  local rc=$?
  # Clean up as far as possible whatever fails on the way.
  set +e
  trap - EXIT INT TERM HUP
  # A signal's trap runs inside the redirections of the command it
  # interrupted (a copy's 2>"$errfile"): say what happened on the real ones.
  exec 1>&8 2>&9
  if ! $finished; then
    [ "$rc" -ne 0 ] || rc=1
    # Nothing written yet (the build failed, say): nothing to say either.
    if [ -s "$journal" ]; then rollback; fi
  fi
  rm -rf -- "$journal" ${stage:+"$stage"} ${errfile:+"$errfile"}
  exit "$rc"
}
exec 8>&1 9>&2
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
errfile=$(mktemp "${TMPDIR:-/tmp}/vfio-hookd-install-err.XXXXXXXXXX")

# fail WHAT: a write failed; say which, with the system's reason, and roll back.
fail() {
  local why
  why=$(tail -n 1 "$errfile" 2>/dev/null | sed 's/.*: //')
  echo "install.sh: cannot $1${why:+ ($why)}" >&2
  exit 1
}

cd "$src"
if $prebuilt; then
  app_src=$src
else
  echo "== building"
  [ -d node_modules ] || npm ci --no-audit --no-fund
  npm run --silent build
  stage=$(mktemp -d "${TMPDIR:-/tmp}/vfio-hookd-stage.XXXXXXXXXX")
  cp package.json package-lock.json README.md "$stage/"
  (cd "$stage" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
  cp -r dist "$stage/dist"
  app_src=$stage
fi

echo "== installing into ${layout:-${destdir:-/}}"
# Replace the previous installation's files (idempotent), remember every path.
# Folders an earlier run made stay ours: carry them over to the new manifest.
replaced=
if [ -z "$layout" ] && [ -f "$manifest" ]; then
  replaced=yes
  grep '^d ' "$manifest" >>"$journal" || true
  grep '^f ' "$manifest" | cut -c3- | under_dest | xargs -0 -r rm -f -- || true
fi
# put_dir DIR: make it (and record it) unless it exists already, so uninstall removes only ours.
put_dir() {
  local d=$1
  [ -d "$destdir$d" ] && return 0
  if [ "$d" = / ]; then mkdir -p "$destdir/"; return 0; fi
  put_dir "$(dirname "$d")"
  echo "d $d" >>"$journal"
  mkdir "$destdir$d" 2>"$errfile" || fail "make the folder '$destdir$d'"
}
# put_file MODE DEST < content. Listed before it is written, so a half-written file goes too.
put_file() {
  put_dir "$(dirname "$2")"
  echo "f $2" >>"$journal"
  { cat >"$destdir$2"; } 2>"$errfile" || fail "write '$destdir$2'"
  chmod "$1" "$destdir$2" 2>"$errfile" || fail "set the mode of '$destdir$2'"
}
# The files in the unit templates that install.sh fills in.
subst() { sed -e "s|@NODE@|$node|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@BUSCTL@|$busctl|g" "$1"; }

# The one list of what goes where.
install_files() {
  # The app: the bundles (one file an executable: scripts/bundle.mjs), production dependencies
  # (the bundles load only the native ones, unix-dgram and usocket, from there).
  put_dir "$libdir"
  put_dir "$libdir/dist"
  local listing
  listing=$(cd "$app_src" && find dist/bin node_modules package.json README.md)
  while IFS= read -r p; do
    if [ -d "$app_src/$p" ] && [ ! -L "$app_src/$p" ]; then echo "d $libdir/$p"; else echo "f $libdir/$p"; fi
  done <<<"$listing" >>"$journal"
  # tar, not a cp a file: about 1,500 files, and each fork counts in the system tier's guest.
  { (cd "$app_src" && tar -cf - dist/bin node_modules package.json README.md) |
    tar -C "$destdir$libdir" --no-same-owner -xf -; } 2>"$errfile" || fail "copy the app into '$destdir$libdir'"

  put_file 0755 "$bindir/vfio-hookctl" <<EOF
#!/bin/sh
exec '$node' '$libdir/dist/bin/vfio-hookctl.js' "\$@"
EOF
  put_file 0755 "$sbindir/vfio-hookd" <<EOF
#!/bin/sh
exec '$node' '$libdir/dist/bin/vfio-hookd.js' "\$@"
EOF
  put_file 0644 "$unitdir/vfio-hookd.service" < <(subst units/vfio-hookd.service.in)
  # The per-user agent and the units it starts, for every user's own manager.
  put_file 0644 "$userunitdir/vfio-hookd-agent.service" < <(subst units/vfio-hookd-agent.service.in)
  put_file 0644 "$userunitdir/looking-glass-client@.service" <units/looking-glass-client@.service
  put_file 0644 "$userunitdir/scream-receiver@.service" <units/scream-receiver@.service
  put_file 0644 "$policydir/org.vfiohookd1.conf" <units/org.vfiohookd1.conf
  put_file 0644 "$activationdir/org.vfiohookd1.service" <units/org.vfiohookd1.service
  put_file 0644 "$docdir/vfio-hookd.toml.example" <lib/config/example.toml
  put_file 0644 "$catalogdir/vfio-hookd.catalog" <catalog/vfio-hookd.catalog
  # The hook with the absolute busctl (NixOS hooks get no useful PATH).
  put_file 0755 "$hooks_dir/vfio-hookd" < <(sed -e "s|^BUSCTL=.*|BUSCTL='$busctl'|" hooks/qemu)
}
install_files

if [ -z "$layout" ]; then
  # The manifest lists itself, last.
  echo "f $libdir/install-manifest" >>"$journal"
  { cp -- "$journal" "$manifest"; } 2>"$errfile" || fail "write the manifest '$manifest'"
fi
finished=true

if [ -n "$layout" ]; then
  echo "laid out: $layout/bin, lib/vfio-hookd, lib/systemd/{system,user}, share/dbus-1/{system.d,system-services}, libexec/vfio-hookd/vfio-hookd"
  exit 0
fi
echo "installed: vfio-hookd, vfio-hookctl, $unitdir/vfio-hookd.service, the bus policy, the hook $hooks_dir/vfio-hookd,"
echo "           the user units vfio-hookd-agent.service, looking-glass-client@.service, scream-receiver@.service in $userunitdir"
echo "configure: /etc/vfio-hookd/vfio-hookd.toml (example: $docdir/vfio-hookd.toml.example); it is re-read on change"

if $has_systemd; then
  # The catalog entries beside its messages (journalctl -x); a failure here costs only the explanations.
  journalctl --update-catalog || echo "install.sh: journalctl --update-catalog failed; journalctl -x will not explain vfio-hookd's messages" >&2
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
