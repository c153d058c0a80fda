#!/usr/bin/env bash
# The vfio-hookd demo on a simulated host: a private dbus-daemon with the
# shipped policy, the real daemon on the simulated reference host (RX 580 for
# the host in group 24, RX 590 for the guest in group 25), and the real libvirt
# hook driven through a VM's start and stop as libvirt would call it. Nothing
# here touches this machine's devices, its system bus or its /dev/shm.
#
#   service/demo.sh [NODE] [SOURCE_DIR]      (install.sh runs it; NODE defaults to `node`)
set -euo pipefail
node=${1:-node}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
[ -f "$src/dist/bin/vfio-hookd.js" ] || { echo "demo: build first (npm run build)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vfio-hookd-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

hookctl() { "$node" "$src/dist/bin/vfio-hookctl.js" --simulate reference-host --sim-dir "$work/sim" "$@"; }
show() { echo "\$ $*"; }

if ! command -v dbus-daemon >/dev/null || ! command -v busctl >/dev/null; then
  echo "(dbus-daemon or busctl missing: showing vfio-hookctl alone)"
  show vfio-hookctl detach 0000:0b:00.0; hookctl detach 0000:0b:00.0 --for win10
  show vfio-hookctl reattach 0000:0b:00.0; hookctl reattach 0000:0b:00.0 --for win10
  exit 0
fi

# A private system-like bus with the shipped policy.
sed -e "s|@SOCKET@|$work/bus|" -e "s|@POLICY@|$src/units/org.vfiohookd1.conf|" "$src/units/private-bus.conf.in" >"$work/bus.conf"
dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile 2>"$work/bus.log" &
pids+=($!)
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/bus"

# A VM configured as the blog's win10: the RX 590, Looking Glass at 1440p, Scream.
cat >"$work/vfio-hookd.toml" <<EOF
[vm.win10]
devices = ["0000:0b:00.0"]
user = "$(id -u)"

[vm.win10.looking-glass]
resolution = "2560x1440"
group = "$(id -g)"

[vm.win10.scream]
size = "2M"
EOF
cat >"$work/win10.xml" <<'EOF'
<domain type='kvm'>
  <name>win10</name>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x0000' bus='0x0b' slot='0x00' function='0x1'/></source>
    </hostdev>
    <shmem name='looking-glass'><model type='ivshmem-plain'/><size unit='M'>64</size></shmem>
    <shmem name='scream'><model type='ivshmem-plain'/><size unit='M'>2</size></shmem>
  </devices>
</domain>
EOF

for _ in $(seq 50); do [ -S "$work/bus" ] && break; sleep 0.1; done
"$node" "$src/dist/bin/vfio-hookd.js" --simulate reference-host --sim-dir "$work/sim" --run-root "$work/run" \
  --config "$work/vfio-hookd.toml" --bus-address "$DBUS_SYSTEM_BUS_ADDRESS" 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do busctl --system status org.vfiohookd1 >/dev/null 2>&1 && break; sleep 0.1; done

# The hook leaves the domain XML for the daemon in its runtime folder: here the demo's.
sed -e "s|^RUNTIME=.*|RUNTIME='$work/run/vfio-hookd'|" "$src/hooks/qemu" >"$work/hook"
hook() { echo "\$ hooks/qemu win10 $1 $2 - < win10.xml"; sh "$work/hook" win10 "$1" "$2" - <"$work/win10.xml" && echo "  (exit 0, nothing on stdout)"; }
group25() { hookctl devices | sed -n '/^IOMMU group 25 /,/^IOMMU group 26 /p' | sed '$d'; }

show busctl introspect org.vfiohookd1 /org/vfiohookd1
busctl --system introspect org.vfiohookd1 /org/vfiohookd1 org.vfiohookd1.Manager
echo
echo "Before the VM starts:"; group25; echo
hook prepare begin
hook start begin
hook started begin
echo "While the VM runs:"; group25
ls -l "$work/sim/dev/shm" | sed 's/^/  /'; echo
hook stopped end
hook release end
echo "After the VM stopped:"; group25; echo
echo "What the daemon logged:"; sed 's/^/  /' "$work/daemon.log"
