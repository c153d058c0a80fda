#!/usr/bin/env bash
# Nix tier: what of the NixOS packaging can be checked without nixpkgs.
#
#   - every .nix file parses (nix-instantiate --parse);
#   - nix/settings.nix renders each test/nix/fixtures/*.nix; the TOML reads
#     back (smol-toml, the daemon's parser, and builtins.fromTOML) as the
#     settings it came from, and `vfio-hookd --check-config` accepts it (and
#     rejects test/nix/fixtures/rejected/*.nix with FILE:LINE:COLUMN);
#   - install.sh --layout lays out the package tree nix/package.nix installs,
#     and systemd-analyze verify accepts its units; install.sh refuses on
#     NixOS, and a failed install removes what it wrote and leaks no
#     temporary file;
#   - module.nix called with a stand-in lib (test/nix/module-smoke.nix):
#     every option documented, its types, assertions, warnings, wiring;
#   - module evaluation, the package build and the VM test need nixpkgs
#     (which cannot be fetched here): reported as skipped, with the reason.
#
# Prints TAP ending with "# pass N", "# skip N", "# fail N" (skips are not
# passes); exits non-zero when anything failed. Nix 2.8 (Debian's nix-bin)
# runs as root without a nixbld group, hence NIX_CONFIG below. It never
# builds anything and never writes outside its temporary folder.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export NIX_CONFIG='build-users-group ='

n=0 pass=0 fail=0 skips=0
ok() { n=$((n + 1)); pass=$((pass + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fail=$((fail + 1)); echo "not ok $n - $*"; }
skip() { n=$((n + 1)); skips=$((skips + 1)); echo "ok $n - $1 # SKIP $2"; }
note() { echo "# $*"; }
# show FILE: its lines as TAP comments (what a failed check saw).
show() { sed 's/^/#   /' "$1"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vfio-hookd-nix.XXXXXX")
trap 'rm -rf "$work"' EXIT
nixi() { nix-instantiate "$@"; }
has_nix=false
command -v nix-instantiate >/dev/null 2>&1 && has_nix=true
no_nix="nix-instantiate is not installed (apt-get install nix-bin)"

# ------------------------------------------------------------------ parse
nix_files=$(cd "$repo" && find . -name '*.nix' -not -path './node_modules/*' -not -path './.git/*' \
  -not -path './dist/*' -not -path './test/kernel/.work/*' | sed 's|^\./||' | LC_ALL=C sort)
for f in $nix_files; do
  if ! $has_nix; then skip "$f parses" "$no_nix"; continue; fi
  if nixi --parse "$repo/$f" >/dev/null 2>"$work/err"; then ok "$f parses"; else notok "$f parses"; show "$work/err"; fi
done

# ------------------------------------------------------------------ settings
# render FIXTURE OUT: nix/settings.nix applied to FIXTURE, the TOML text in OUT.
render() {
  nixi --eval --strict --json -E "import $repo/nix/settings.nix (import $1)" 2>"$work/err" |
    node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")))' >"$2" 2>>"$work/err"
}
# The daemon's own check, once branch i11-daemon's option is there. Probed
# without a value: an unknown option is refused by the option parser before
# anything starts, so the probe never runs a daemon.
daemon=(node --import tsx "$repo/service/vfio-hookd.ts")
check_config=true
probe=$(cd "$repo" && "${daemon[@]}" --check-config 2>&1 </dev/null)
case "$probe" in
  *"Unknown option '--check-config'"*) check_config=false ;;
esac
no_check="vfio-hookd has no --check-config yet (branch i11-daemon adds it)"

for fixture in "$here"/fixtures/*.nix; do
  name=fixtures/$(basename "$fixture")
  if ! $has_nix; then
    skip "settings.nix renders $name" "$no_nix"
    continue
  fi
  toml=$work/$(basename "$fixture" .nix).toml
  if render "$fixture" "$toml"; then ok "settings.nix renders $name"; else
    notok "settings.nix renders $name"; show "$work/err"; continue
  fi
  nixi --eval --strict --json -E "import $fixture" >"$work/settings.json" 2>"$work/err" &&
    nixi --eval --strict --json -E "builtins.fromTOML (builtins.readFile $toml)" >"$work/fromtoml.json" 2>>"$work/err" &&
    (cd "$repo" && node --import tsx test/nix/same-settings.ts "$toml" "$work/settings.json" "$work/fromtoml.json") 2>>"$work/err"
  if [ $? -eq 0 ]; then ok "$name: the TOML reads back as the settings (smol-toml and builtins.fromTOML)"; else
    notok "$name: the TOML reads back as the settings (smol-toml and builtins.fromTOML)"; show "$work/err"
  fi
  if ! $check_config; then skip "$name: vfio-hookd --check-config accepts the rendered file" "$no_check"; continue; fi
  if (cd "$repo" && "${daemon[@]}" --check-config "$toml") >"$work/out" 2>&1; then
    ok "$name: vfio-hookd --check-config accepts the rendered file"
  else
    notok "$name: vfio-hookd --check-config accepts the rendered file"; show "$toml"; show "$work/out"
  fi
done
# Settings the daemon must refuse: a mistake in configuration.nix fails the build, with its place.
for fixture in "$here"/fixtures/rejected/*.nix; do
  name=fixtures/rejected/$(basename "$fixture")
  if ! $has_nix; then skip "$name: --check-config refuses it" "$no_nix"; continue; fi
  if ! $check_config; then skip "$name: --check-config refuses it with FILE:LINE:COLUMN" "$no_check"; continue; fi
  toml=$work/rejected.toml
  render "$fixture" "$toml" || { notok "$name renders"; show "$work/err"; continue; }
  (cd "$repo" && "${daemon[@]}" --check-config "$toml") >"$work/out" 2>&1
  rc=$?
  want=$(sed -n 's/^# expect: //p' "$fixture")
  if [ "$rc" -eq 1 ] && grep -qF "$toml:$want" "$work/out"; then
    ok "$name: --check-config refuses it with FILE:LINE:COLUMN"
  else
    notok "$name: --check-config refuses it with FILE:LINE:COLUMN (exit $rc, expected 1 and '$toml:$want')"; show "$work/out"
  fi
done

# ------------------------------------------------------------------ module, stubbed
# nix/module.nix with a stand-in for nixpkgs' lib and pkgs (builtins only):
# option documentation, its types against the fixtures, assertions, warnings
# and wiring. Not the module system; eval-module.nix below is, with nixpkgs.
if $has_nix; then
  if nixi --eval --strict "$here/module-smoke.nix" >"$work/out" 2>&1 && [ "$(cat "$work/out")" = '"ok"' ]; then
    ok "module.nix on a stand-in lib: every option documented, fixtures pass its types, the blog's config wires hook, alias, units, dbus, agent, initrd loop and the checked file; mistakes fail the expected assertions"
  else
    notok "module.nix on a stand-in lib (test/nix/module-smoke.nix)"; show "$work/out"
  fi
else
  skip "module.nix on a stand-in lib" "$no_nix"
fi

# ------------------------------------------------------------------ initrd
# hold = "boot": the stage-1 commands nix/initrd-hold.nix makes from the
# blog's win10, run against a stand-in /sys with the host's RX 580 (0a:00.x)
# beside the guest's RX 590 (0b:00.x), modprobe a recording stand-in.
if $has_nix; then
  sys=$work/sys
  for dev in 0000:0a:00.0 0000:0a:00.1 0000:0b:00.0 0000:0b:00.1; do
    mkdir -p "$sys/bus/pci/devices/$dev" && : >"$sys/bus/pci/devices/$dev/driver_override"
  done
  mkdir -p "$work/initrd-bin"
  printf '#!/bin/sh\necho "modprobe $*" >>"%s"\n' "$work/modprobe.log" >"$work/initrd-bin/modprobe"
  chmod 0755 "$work/initrd-bin/modprobe"
  if nixi --eval --strict --json -E "(import $repo/nix/initrd-hold.nix { settings = import $here/fixtures/win10.nix; sysfs = \"$sys\"; }).commands" 2>"$work/err" |
    node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")))' >"$work/initrd.sh" 2>>"$work/err" &&
    PATH="$work/initrd-bin:$PATH" sh -e "$work/initrd.sh" >"$work/out" 2>&1 &&
    [ "$(cat "$sys/bus/pci/devices/0000:0b:00.0/driver_override" "$sys/bus/pci/devices/0000:0b:00.1/driver_override")" = "$(printf 'vfio-pci\nvfio-pci')" ] &&
    [ -z "$(cat "$sys/bus/pci/devices/0000:0a:00.0/driver_override" "$sys/bus/pci/devices/0000:0a:00.1/driver_override")" ] &&
    [ "$(cat "$work/modprobe.log")" = "modprobe -i vfio-pci" ]; then
    ok "initrd-hold.nix: win10's hold = \"boot\" sets vfio-pci as driver_override of 0b:00.0 and 0b:00.1 only, then loads vfio-pci"
  else
    notok "initrd-hold.nix: win10's hold = \"boot\" commands"; show "$work/err"; show "$work/initrd.sh"; show "$work/out"
  fi
  if nixi --eval --strict --json -E "import $repo/nix/initrd-hold.nix { settings = import $here/fixtures/readme.nix; }" >"$work/out" 2>&1 &&
    [ "$(cat "$work/out")" = '{"commands":"","devices":[]}' ]; then
    ok "initrd-hold.nix: no hold = \"boot\" VM, no initrd commands"
  else
    notok "initrd-hold.nix: no hold = \"boot\" VM, no initrd commands"; show "$work/out"
  fi
else
  skip "initrd-hold.nix: the hold = \"boot\" commands" "$no_nix"
fi

# ------------------------------------------------------------------ install.sh
# A source tree with what install.sh reads (its units, hook and example from
# the repository) and a stand-in app: the layout, not the build, is under test.
src=$work/src
mkdir -p "$src/units" "$src/hooks" "$src/lib/config" "$src/catalog" "$src/dist/bin" "$src/dist/lib" "$src/dist/test" "$src/node_modules/dep/dist/test"
cp "$repo/install.sh" "$repo/package.json" "$repo/package-lock.json" "$repo/README.md" "$src/"
cp "$repo"/units/* "$src/units/"
cp "$repo/hooks/qemu" "$src/hooks/"
cp "$repo/lib/config/example.toml" "$src/lib/config/"
cp "$repo/catalog/vfio-hookd.catalog" "$src/catalog/"
for f in vfio-hookd vfio-hookctl vfio-hookd-agent; do echo "// stand-in" >"$src/dist/bin/$f.js"; done
echo "// the tsc output the bundles are made from, not installed" >"$src/dist/lib/x.js"
echo "// a test, not installed" >"$src/dist/test/x.test.js"
echo "// a dependency's own file, installed" >"$src/node_modules/dep/dist/test/keep.js"
ln -s dep "$src/node_modules/dep-link"
node_bin=$(readlink -f "$(command -v node)")
busctl_bin=$(command -v busctl || true)
if [ -z "$busctl_bin" ]; then
  busctl_bin=$work/bin/busctl
  mkdir -p "$work/bin" && printf '#!/bin/sh\nexit 1\n' >"$busctl_bin" && chmod 0755 "$busctl_bin"
fi
busctl_bin=$(readlink -f "$busctl_bin")
tmp=$work/tmp
mkdir -p "$tmp"
# inst [ENV=VALUE...] -- ARGS: install.sh of the stand-in tree, its TMPDIR watched; stdout+stderr in $work/out.
inst() {
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  (cd "$work" && env TMPDIR="$tmp" "${envs[@]}" bash "$src/install.sh" --prebuilt --node "$node_bin" --busctl "$busctl_bin" "$@") >"$work/out" 2>&1
}
# tree DIR: every path under DIR, sorted.
tree() { (cd "$1" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort); }
no_temp() { [ -z "$(ls -A "$tmp")" ]; }

layout=$work/layout
cat >"$work/expected-layout" <<'EOF'
bin
bin/vfio-hookctl
bin/vfio-hookd
lib
lib/systemd
lib/systemd/catalog
lib/systemd/catalog/vfio-hookd.catalog
lib/systemd/system
lib/systemd/system/vfio-hookd.service
lib/systemd/user
lib/systemd/user/looking-glass-client@.service
lib/systemd/user/scream-receiver@.service
lib/systemd/user/vfio-hookd-agent.service
lib/vfio-hookd
lib/vfio-hookd/README.md
lib/vfio-hookd/dist
lib/vfio-hookd/dist/bin
lib/vfio-hookd/dist/bin/vfio-hookctl.js
lib/vfio-hookd/dist/bin/vfio-hookd-agent.js
lib/vfio-hookd/dist/bin/vfio-hookd.js
lib/vfio-hookd/node_modules
lib/vfio-hookd/node_modules/dep
lib/vfio-hookd/node_modules/dep-link
lib/vfio-hookd/node_modules/dep/dist
lib/vfio-hookd/node_modules/dep/dist/test
lib/vfio-hookd/node_modules/dep/dist/test/keep.js
lib/vfio-hookd/package.json
libexec
libexec/vfio-hookd
libexec/vfio-hookd/vfio-hookd
share
share/dbus-1
share/dbus-1/system-services
share/dbus-1/system-services/org.vfiohookd1.service
share/dbus-1/system.d
share/dbus-1/system.d/org.vfiohookd1.conf
share/doc
share/doc/vfio-hookd
share/doc/vfio-hookd/vfio-hookd.toml.example
EOF
if inst -- --layout "$layout" && tree "$layout" >"$work/got-layout" && diff -u "$work/expected-layout" "$work/got-layout" >"$work/diff"; then
  ok "install.sh --layout lays out bin, lib/systemd/{system,user}, lib/vfio-hookd, libexec/vfio-hookd, share/dbus-1/{system.d,system-services}"
else
  notok "install.sh --layout lays out the package tree"; show "$work/out"; show "$work/diff"
fi
problems=
grep -qxF "ExecStart=$node_bin --lite-mode --no-expose-wasm --max-semi-space-size=1 --max-old-space-size=48 --single-threaded $layout/lib/vfio-hookd/dist/bin/vfio-hookd.js" "$layout/lib/systemd/system/vfio-hookd.service" 2>/dev/null || problems+=" vfio-hookd.service's ExecStart;"
grep -qxF "ExecStart=$node_bin --lite-mode --no-expose-wasm --max-semi-space-size=1 --max-old-space-size=48 --single-threaded $layout/lib/vfio-hookd/dist/bin/vfio-hookd-agent.js" "$layout/lib/systemd/user/vfio-hookd-agent.service" 2>/dev/null || problems+=" the agent's ExecStart;"
grep -qxF "BUSCTL='$busctl_bin'" "$layout/libexec/vfio-hookd/vfio-hookd" 2>/dev/null || problems+=" the hook's BUSCTL;"
grep -qxF "ExecReload=$busctl_bin --system --timeout=90 call org.vfiohookd1 /org/vfiohookd1 org.vfiohookd1.Manager Reload" "$layout/lib/systemd/system/vfio-hookd.service" 2>/dev/null || problems+=" vfio-hookd.service's ExecReload;"
grep -qxF "exec '$node_bin' '$layout/lib/vfio-hookd/dist/bin/vfio-hookd.js' \"\$@\"" "$layout/bin/vfio-hookd" 2>/dev/null || problems+=" bin/vfio-hookd;"
for f in bin/vfio-hookd bin/vfio-hookctl libexec/vfio-hookd/vfio-hookd; do
  [ "$(stat -c %a "$layout/$f" 2>/dev/null)" = 755 ] || problems+=" mode of $f;"
done
[ "$(stat -c %a "$layout/lib/systemd/system/vfio-hookd.service" 2>/dev/null)" = 644 ] || problems+=" mode of the unit;"
if [ -z "$problems" ]; then ok "the layout's units, wrappers and hook name the layout's own paths, node and busctl"; else
  notok "the layout's units, wrappers and hook name the layout's own paths, node and busctl (wrong:$problems)"
fi
if no_temp; then ok "install.sh --layout leaves no temporary file"; else notok "install.sh --layout leaves no temporary file"; ls -A "$tmp" | sed 's/^/#   /'; fi

# systemd-analyze verify on the layout's units. Looking Glass and Scream are
# bare command names in units/; the module replaces them with store paths
# (nix/module.nix), so here they become stand-in executables of the layout.
if command -v systemd-analyze >/dev/null 2>&1 && [ -f "$layout/lib/systemd/system/vfio-hookd.service" ]; then
  mkdir -p "$work/verify/system" "$work/verify/user" "$work/verify/bin" "$work/runtime"
  for c in looking-glass-client scream; do printf '#!/bin/sh\n' >"$work/verify/bin/$c"; chmod 0755 "$work/verify/bin/$c"; done
  cp "$layout/lib/systemd/system/vfio-hookd.service" "$work/verify/system/"
  for u in "$layout"/lib/systemd/user/*.service; do
    sed -e "s|^ExecStart=looking-glass-client |ExecStart=$work/verify/bin/looking-glass-client |" \
      -e "s|^ExecStart=scream |ExecStart=$work/verify/bin/scream |" "$u" >"$work/verify/user/$(basename "$u")"
  done
  if systemd-analyze verify "$work/verify/system/vfio-hookd.service" >"$work/out" 2>&1; then
    ok "systemd-analyze verify accepts the layout's vfio-hookd.service"
  else
    notok "systemd-analyze verify accepts the layout's vfio-hookd.service"; show "$work/out"
  fi
  # --user needs a runtime folder of its own (it starts no manager).
  if XDG_RUNTIME_DIR=$work/runtime systemd-analyze --user verify "$work"/verify/user/*.service >"$work/out" 2>&1; then
    ok "systemd-analyze --user verify accepts the agent, looking-glass-client@ and scream-receiver@ (commands as store paths)"
  else
    notok "systemd-analyze --user verify accepts the user units"; show "$work/out"
  fi
else
  skip "systemd-analyze verify accepts the layout's units" "systemd-analyze is not installed (package systemd) or the layout failed"
fi

# --layout into a folder that is not empty: a store path is always new, anything else is a mistake.
mkdir -p "$work/full" && touch "$work/full/x"
inst -- --layout "$work/full"
rc=$?
if [ "$rc" -eq 1 ] && [ "$(cat "$work/out")" = "install.sh: --layout '$work/full' exists and is not an empty folder; give a new or empty one, refusing" ] && [ "$(tree "$work/full")" = x ]; then
  ok "install.sh --layout refuses a folder that is not empty, and leaves it as it was"
else
  notok "install.sh --layout refuses a folder that is not empty (exit $rc)"; show "$work/out"
fi

# NixOS: refused before anything, even before looking for node.
root=$work/nixos
mkdir -p "$root/etc" && touch "$root/etc/NIXOS"
(cd "$work" && env -i PATH=/nonexistent DESTDIR="$root" TMPDIR="$tmp" /bin/bash "$src/install.sh") >"$work/out" 2>&1
rc=$?
want="install.sh: '$root/etc/NIXOS' exists: on NixOS vfio-hookd comes from its module (services.vfio-hookd in this repository's flake.nix, see README.md's NixOS section), not from install.sh, refusing"
if [ "$rc" -eq 1 ] && [ "$(cat "$work/out")" = "$want" ] && [ "$(tree "$root")" = "$(printf 'etc\netc/NIXOS')" ] && no_temp; then
  ok "install.sh on NixOS refuses at once with one sentence naming the module, and writes nothing"
else
  notok "install.sh on NixOS refuses at once (exit $rc)"; show "$work/out"; tree "$root" | sed 's/^/#   /'
fi

# DESTDIR: install, install again (same tree), uninstall (nothing left).
dest=$work/dest
mkdir -p "$dest"
if inst "DESTDIR=$dest" -- --no-demo && tree "$dest" >"$work/first" && [ -f "$dest/usr/local/lib/vfio-hookd/install-manifest" ] &&
  inst "DESTDIR=$dest" -- --no-demo && tree "$dest" >"$work/second" && cmp -s "$work/first" "$work/second" &&
  inst "DESTDIR=$dest" -- --uninstall && [ -z "$(tree "$dest")" ] && no_temp; then
  ok "install.sh into DESTDIR twice gives the same tree, --uninstall leaves nothing, no temporary file stays"
else
  notok "install.sh into DESTDIR, again, then --uninstall"; show "$work/out"
fi

# A failure after the first writes: a folder where the hook (the last file) goes.
dest=$work/dest-fail
mkdir -p "$dest/etc/libvirt/hooks/qemu.d/vfio-hookd/not-ours"
inst "DESTDIR=$dest" -- --no-demo
rc=$?
want_tail="install.sh: cannot write '$dest/etc/libvirt/hooks/qemu.d/vfio-hookd' (Is a directory)"
if [ "$rc" -eq 1 ] && grep -qxF "$want_tail" "$work/out" &&
  grep -qE "^install.sh: the install failed; removed the [0-9]+ files and [0-9]+ folders it had written; fix the cause and run install.sh again$" "$work/out" &&
  [ "$(tree "$dest")" = "$(printf 'etc\netc/libvirt\netc/libvirt/hooks\netc/libvirt/hooks/qemu.d\netc/libvirt/hooks/qemu.d/vfio-hookd\netc/libvirt/hooks/qemu.d/vfio-hookd/not-ours')" ] && no_temp; then
  ok "a failed install (a folder in the hook's place) says which file, removes everything it wrote, keeps what was there, leaks no temporary file"
else
  notok "a failed install removes what it wrote (exit $rc)"; show "$work/out"; tree "$dest" | sed 's/^/#   /'; ls -A "$tmp" | sed 's/^/#   tmp: /'
fi

# Read-only and full file systems need a mount namespace of our own (root, or user namespaces).
if unshare -m --propagation private true 2>/dev/null; then
  ns() { unshare -m --propagation private bash -c "$1" >"$work/out" 2>&1; }
  dest=$work/dest-ro
  mkdir -p "$dest/etc"
  ns "mount --bind '$dest/etc' '$dest/etc' && mount -o remount,bind,ro '$dest/etc' && cd '$work' && TMPDIR='$tmp' DESTDIR='$dest' bash '$src/install.sh' --prebuilt --node '$node_bin' --busctl '$busctl_bin' --no-demo"
  rc=$?
  want="install.sh: cannot install into '$dest/etc/systemd/system': '$dest/etc' is not writable (a read-only file system, or not yours; run as root or set DESTDIR), refusing"
  if [ "$rc" -eq 1 ] && [ "$(cat "$work/out")" = "$want" ] && [ "$(tree "$dest")" = etc ] && no_temp; then
    ok "install.sh refuses a read-only /etc/systemd/system before writing anything"
  else
    notok "install.sh refuses a read-only /etc/systemd/system (exit $rc)"; show "$work/out"; tree "$dest" | sed 's/^/#   /'
  fi
  # A file system that runs out of inodes part way: everything written goes again.
  for mode in destdir layout; do
    dest=$work/dest-full-$mode
    mkdir -p "$dest"
    if [ $mode = destdir ]; then how="DESTDIR='$dest'"; args="--no-demo"; else how=; args="--layout '$dest/out'"; fi
    ns "mount -t tmpfs -o size=1m,nr_inodes=24 full '$dest' && cd '$work' && env TMPDIR='$tmp' $how bash '$src/install.sh' --prebuilt --node '$node_bin' --busctl '$busctl_bin' $args; rc=\$?; find '$dest' -mindepth 1 | sed 's/^/left: /'; exit \$rc"
    rc=$?
    # Nothing left: with --layout, the folder it made goes too.
    left=$(grep '^left: ' "$work/out")
    if [ "$rc" -eq 1 ] && grep -q "(No space left on device)$" "$work/out" && grep -q '^install.sh: the install failed; removed the ' "$work/out" &&
      [ -z "$left" ] && no_temp; then
      ok "an install ($mode) that runs out of space part way removes what it wrote and leaks no temporary file"
    else
      notok "an install ($mode) that runs out of space part way removes what it wrote (exit $rc)"; show "$work/out"
    fi
  done
else
  skip "install.sh refuses a read-only /etc/systemd/system" "no mount namespace here (unshare -m failed: needs root or user namespaces)"
  skip "an install that runs out of space part way removes what it wrote" "no mount namespace here (unshare -m failed)"
fi

# Interrupted (Ctrl-C sends SIGINT to the whole process group) while the app
# is being copied: a stand-in tar says so through a FIFO, then waits to be
# killed with the group; install.sh's trap then removes what it wrote.
if command -v setsid >/dev/null 2>&1; then
  dest=$work/dest-int
  mkdir -p "$dest" "$work/slow-bin"
  mkfifo "$work/copying"
  real_tar=$(command -v tar)
  printf '%s\n' '#!/bin/sh' 'case "$*" in' \
    "  *-xf*) echo copying >'$work/copying'; exec sleep 600 ;;" \
    "  *) exec '$real_tar' \"\$@\" ;;" 'esac' >"$work/slow-bin/tar"
  chmod 0755 "$work/slow-bin/tar"
  (cd "$work" && exec env PATH="$work/slow-bin:$PATH" TMPDIR="$tmp" DESTDIR="$dest" setsid bash "$src/install.sh" --prebuilt --node "$node_bin" --busctl "$busctl_bin" --no-demo) >"$work/out" 2>&1 &
  inst_pid=$!
  read -r _ <"$work/copying"
  kill -INT -- "-$inst_pid" 2>/dev/null
  wait "$inst_pid"
  rc=$?
  if [ "$rc" -eq 130 ] && grep -q '^install.sh: the install failed; removed the ' "$work/out" && [ -z "$(tree "$dest")" ] && no_temp; then
    ok "an install interrupted (SIGINT to its process group) while copying removes what it wrote and leaks no temporary file"
  else
    notok "an install interrupted while copying removes what it wrote (exit $rc)"; show "$work/out"; tree "$dest" | sed 's/^/#   /'
  fi
else
  skip "an install interrupted while copying removes what it wrote" "setsid (util-linux) is not installed"
fi

# ------------------------------------------------------------------ nixpkgs
# The module, the package and the VM test import nixpkgs; none can be
# fetched here, so they are evaluated only where NIX_PATH has one.
if $has_nix && nixi --find-file nixpkgs >/dev/null 2>&1; then
  if nixi --eval --strict -E "import $here/eval-module.nix { }" >"$work/out" 2>&1; then
    ok "nix/module.nix evaluates in a NixOS configuration (assertions, units, hook, initrd loop)"
  else
    notok "nix/module.nix evaluates in a NixOS configuration"; show "$work/out"
  fi
  skip "nix/package.nix builds" "building needs the npm registry's tarballs (importNpmLock); run nix build .#default"
  skip "nix/tests/vm.nix (the NixOS VM test)" "needs KVM and a NixOS toolchain build; run nix flake check"
else
  why="no nixpkgs in NIX_PATH (it cannot be fetched here)"
  $has_nix || why=$no_nix
  skip "nix/module.nix evaluates in a NixOS configuration" "$why"
  skip "nix/package.nix builds" "$why"
  skip "nix/tests/vm.nix (the NixOS VM test)" "$why"
fi

echo "1..$n"
echo "# pass $pass"
echo "# skip $skips"
echo "# fail $fail"
[ "$fail" -eq 0 ]
