#!/bin/sh
# The system tier's steps, run INSIDE the QEMU guest by vfio-system-test.service
# under the host's systemd as PID 1 (never on the host). Lines "ok - ..." /
# "not ok - ..." / "# ..." go to /results/tap as they happen; the host numbers
# them. Each bounded command runs under its own budget (below); one that runs
# out says "timed out in step N".
#   1. the boot: systemd, journald, the system bus
#   2. install.sh as a user runs it: builds (stand-in npm), installs, enables and starts vfio-hookd
#   3. the hook as libvirt runs it, for a VM with the guest GPU as managed='no' hostdevs:
#      prepare moves the pair to vfio-pci; restart while prepared changes nothing; release gives it back
#   4. a refused prepare (a process holding the DRM node) changes nothing; the follow-ups are harmless
#   5. systemctl stop releases the bus name
R=/results
TAP=$R/tap
PCI=/sys/bus/pci/devices
HOOK=/etc/libvirt/hooks/qemu.d/vfio-hookd
VM=systest
# Budgets (s), for a machine twice as slow as the 2-core one measured: a cold
# node start of the daemon took up to 28 s there, a daemon-reload 6 s.
NODE=60
HOOKCALL=60
INSTALL=$(( 3 * NODE + 240 ))   # node -p, the file copies (one cp per file), daemon-reload, the daemon's start

say()   { echo "$*" >> "$TAP"; echo "$*"; }
ok()    { say "ok - $*"; }
notok() { say "not ok - $*"; FAILED=1; }
note()  { say "# $*"; }
eq()    { if [ "$2" = "$3" ]; then ok "$1"; else notok "$1 (got '$2', want '$3')"; fi; }
N=0
step()  { N=$((N + 1)); echo "$N ($*)" > $R/step; note "step $N: $*"; }
# bounded SECS CMD...: BRC is the exit status; 124 means the budget ran out, said once
bounded() {
  s=$1; shift
  timeout -k 5 "$s" "$@"; BRC=$?
  if [ $BRC -eq 124 ] || [ $BRC -eq 137 ]; then notok "timed out in step $N ($(sed 's/^[0-9]* //' $R/step)): '$*' took more than $s s"; fi
  return $BRC
}
drv() { l=$(readlink "$PCI/$1/driver" 2>/dev/null) && echo "${l##*/}" || echo none; }
grp() { l=$(readlink "$PCI/$1/iommu_group" 2>/dev/null) && echo "${l##*/}" || echo none; }
up()  { cut -d' ' -f1 /proc/uptime; }
# hook OP SUBOP EXTRA: the installed hook as libvirt runs it (LC_ALL=C, a short PATH, the XML on stdin)
hook() {
  bounded $HOOKCALL env -i LC_ALL=C PATH=/usr/sbin:/usr/bin HOME=/root USER=root LOGNAME=root \
    "$HOOK" "$VM" "$1" "$2" "$3" < /tmp/domain.xml > /tmp/hook.out 2> /tmp/hook.err
}
FAILED=0
finish() {
  note "system tier steps done at $(up) s of guest uptime"
  say "# guest-done rc=$FAILED"
  sync
  exit 0
}

# ------------------------------------------------------------ 1. boot
step "boot to vfio-system.target"
note "guest: kernel $(uname -r), systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), reached basic.target at $(up) s"
eq "boot: PID 1 is systemd" "$(cat /proc/1/comm)" systemd
eq "boot: systemd-journald.service is active" "$(systemctl is-active systemd-journald.service)" active
bounded 30 busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId > /dev/null 2>&1
eq "boot: the system bus answers (dbus.service activated by dbus.socket)" "$BRC $(systemctl is-active dbus.service)" "0 active"
jobs=$(systemctl list-jobs --no-legend 2>/dev/null | grep -v vfio-system | head -n 5 | tr -s ' ' | tr '\n' ';')
eq "boot: no other job is pending (nothing waits on a device unit)" "$jobs" ""

# ------------------------------------------------------------ 2. install
step "find the guest GPU and write the configuration"
VGAS="" HDA=""
for d in "$PCI"/*; do
  case "$(cat "$d/vendor"):$(cat "$d/device"):$(cat "$d/class")" in
    0x1234:0x1111:0x0300*) VGAS="$VGAS ${d##*/}" ;;
    0x8086:0x293e:0x0403*) HDA=${d##*/} ;;
  esac
done
VGA=""
for v in $VGAS; do [ -n "$HDA" ] && [ "$(grp "$v")" = "$(grp "$HDA")" ] && VGA=$v; done
if [ -z "$VGA" ] || [ -z "$HDA" ]; then notok "find the guest VGA+HDA pair by class and ids (VGA '${VGA}', HDA '${HDA}')"; finish; fi
GROUP=$(grp "$VGA")
CARD=$(ls "$PCI/$VGA/drm" 2>/dev/null | grep -m1 '^card')
ok "the guest GPU: VGA $VGA and HDA $HDA in IOMMU group $GROUP, DRM node ${CARD:-none}"
eq "the pair starts on its host drivers" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
# No udev here: kmod-static-nodes left /dev/vfio/vfio at 0600; udev's rule makes it 0666.
[ -c /dev/vfio/vfio ] && chmod 0666 /dev/vfio/vfio
mkdir -p /etc/vfio-hookd
printf '[vm.%s]\ndevices = ["%s"]\n' "$VM" "$VGA" > /etc/vfio-hookd/vfio-hookd.toml
chmod 0644 /etc/vfio-hookd/vfio-hookd.toml
ok "configuration /etc/vfio-hookd/vfio-hookd.toml names $VGA for VM '$VM'"
cat > /tmp/domain.xml <<XML
<domain type='kvm'>
  <name>$VM</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x${VGA%%:*}' bus='0x$(echo "$VGA" | cut -d: -f2)' slot='0x$(echo "$VGA" | cut -d: -f3 | cut -d. -f1)' function='0x${VGA##*.}'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source><address domain='0x${HDA%%:*}' bus='0x$(echo "$HDA" | cut -d: -f2)' slot='0x$(echo "$HDA" | cut -d: -f3 | cut -d. -f1)' function='0x${HDA##*.}'/></source>
    </hostdev>
  </devices>
</domain>
XML

step "install.sh"
t0=$(up)
PATH=/harness/bin:$PATH bounded $INSTALL /repo/install.sh > $R/install.log 2>&1
note "install.sh exited $BRC after $(awk -v a="$(up)" -v b="$t0" 'BEGIN{printf "%.0f", a - b}') s (log: results/install.log)"
eq "install.sh exits 0" "$BRC" 0
[ $BRC -eq 0 ] || sed 's/^/#   install.sh: /' $R/install.log | tail -n 15 | tee -a "$TAP"
grep -q 'restart it once' $R/install.log && ok "install.sh says to restart libvirtd for the hook" || notok "install.sh says to restart libvirtd for the hook"
eq "systemctl is-enabled vfio-hookd" "$(systemctl is-enabled vfio-hookd.service 2>&1)" enabled
eq "systemctl is-active vfio-hookd" "$(systemctl is-active vfio-hookd.service 2>&1)" active
status=$(systemctl show -p StatusText --value vfio-hookd.service)
if [ -n "$status" ]; then ok "the daemon's STATUS= reads '$status'"; else notok "the daemon sent a STATUS= line (systemctl show -p StatusText is empty)"; fi
# The unit's sandbox must leave /sys writable (binding drivers is writing it): say so by name, before any hook.
mainpid=$(systemctl show -p MainPID --value vfio-hookd.service)
sysopts=$(awk '$5 == "/sys" { o = $6 } END { print o }' "/proc/$mainpid/mountinfo" 2>/dev/null)
case ",$sysopts," in
  *,ro,*) notok "the daemon sees /sys read-only (mount options '$sysopts'): its unit's sandbox forbids driver binding (ProtectKernelTunables=yes?)" ;;
  ,,) notok "the daemon's /sys mount read from /proc/$mainpid/mountinfo" ;;
  *) ok "the daemon sees /sys read-write in its sandbox ($sysopts)" ;;
esac
eq "the watchdog is armed (WatchdogUSec)" "$(systemctl show -p WatchdogUSec --value vfio-hookd.service)" 1min
bounded 30 busctl --system introspect org.vfiohookd1 /org/vfiohookd1 > /tmp/introspect.txt 2>&1
if [ $BRC -eq 0 ] && grep -q '^org.vfiohookd1.Manager ' /tmp/introspect.txt && grep -q '\.HandleHook' /tmp/introspect.txt; then
  ok "busctl introspect org.vfiohookd1 /org/vfiohookd1 shows org.vfiohookd1.Manager with HandleHook"
else
  notok "busctl introspect org.vfiohookd1 /org/vfiohookd1 shows org.vfiohookd1.Manager with HandleHook (exit $BRC: $(head -c 300 /tmp/introspect.txt | tr '\n' ' '))"
fi
if [ -x "$HOOK" ]; then ok "install.sh put the hook at $HOOK"; else notok "install.sh put the hook at $HOOK"; fi
if ! systemctl -q is-active vfio-hookd.service || ! [ -x "$HOOK" ]; then
  notok "the daemon is not running or the hook is missing: the hook steps cannot run"
  finish
fi

# ------------------------------------------------------------ 3. the hook, restart, release
step "hook prepare begin"
hook prepare begin -
eq "hook 'prepare begin' exits 0 with nothing on stdout" "$BRC $(wc -c < /tmp/hook.out)" "0 0"
[ $BRC -eq 0 ] || note "hook stderr: $(head -c 400 /tmp/hook.err | tr '\n' ' ')"
eq "prepare moved the VGA and the HDA to vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
if [ -c "/dev/vfio/$GROUP" ]; then ok "/dev/vfio/$GROUP exists"; else notok "/dev/vfio/$GROUP exists"; fi
hook start begin -
eq "hook 'start begin' exits 0" "$BRC" 0
hook started begin -
eq "hook 'started begin' exits 0" "$BRC" 0
bounded 30 journalctl -u vfio-hookd.service -b -o export VFIO_DOMAIN=$VM > /tmp/journal.export 2>/dev/null
if grep -q "^PCI_ADDRESS=$VGA" /tmp/journal.export && grep -q '^MESSAGE_ID=' /tmp/journal.export; then
  ok "journalctl -u vfio-hookd VFIO_DOMAIN=$VM has entries with PCI_ADDRESS=$VGA and a MESSAGE_ID ($(grep -c '^MESSAGE_ID=' /tmp/journal.export) with one)"
else
  notok "journalctl -u vfio-hookd VFIO_DOMAIN=$VM has entries with PCI_ADDRESS=$VGA and a MESSAGE_ID ($(grep -c '^__CURSOR=' /tmp/journal.export) entries for the VM)"
fi

step "systemctl restart vfio-hookd while the VM runs"
pid0=$(systemctl show -p MainPID --value vfio-hookd.service)
bounded $NODE systemctl restart vfio-hookd.service
eq "systemctl restart vfio-hookd exits 0 and the daemon is active again" "$BRC $(systemctl is-active vfio-hookd.service)" "0 active"
pid1=$(systemctl show -p MainPID --value vfio-hookd.service)
if [ "$pid0" != "$pid1" ]; then ok "a new daemon process runs (pid $pid0 -> $pid1)"; else notok "a new daemon process runs (pid still $pid1)"; fi
eq "the restart changed nothing: the pair is still on vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
hook reconnect begin -
eq "hook 'reconnect begin' after the restart exits 0" "$BRC" 0

step "hook stopped end, release end"
hook stopped end -
eq "hook 'stopped end' exits 0" "$BRC" 0
hook release end shutdown
eq "hook 'release end shutdown' exits 0" "$BRC" 0
[ $BRC -eq 0 ] || note "hook stderr: $(head -c 400 /tmp/hook.err | tr '\n' ' ')"
eq "release gave the pair back to bochs-drm and snd_hda_intel" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
eq "driver_override of both is cleared" "$(cat "$PCI/$VGA/driver_override") $(cat "$PCI/$HDA/driver_override")" "(null) (null)"
if [ -e "/dev/vfio/$GROUP" ]; then notok "/dev/vfio/$GROUP is gone after the release"; else ok "/dev/vfio/$GROUP is gone after the release"; fi

# ------------------------------------------------------------ 4. a refused prepare
step "refused prepare (a process holds the DRM node)"
CARD=$(ls "$PCI/$VGA/drm" 2>/dev/null | grep -m1 '^card')
if [ -n "$CARD" ] && [ -c "/dev/dri/$CARD" ]; then
  sleep 600 < "/dev/dri/$CARD" &
  holder=$!
  hook prepare begin -
  err=$(head -n 1 /tmp/hook.err)
  eq "hook 'prepare begin' exits 1" "$BRC" 1
  case "$err" in
    "vfio-hookd: "*"$holder"*) ok "its stderr is the daemon's sentence naming pid $holder: '$err'" ;;
    *) notok "its stderr is the daemon's sentence naming pid $holder (got '$err')" ;;
  esac
  eq "the refusal changed nothing: the pair is on its host drivers" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
  eq "and no override is left" "$(cat "$PCI/$VGA/driver_override") $(cat "$PCI/$HDA/driver_override")" "(null) (null)"
  hook stopped end -
  eq "the follow-up 'stopped end' exits 0" "$BRC" 0
  hook release end failed
  eq "the follow-up 'release end failed' exits 0 and changes nothing" "$BRC $(drv "$VGA") $(drv "$HDA")" "0 bochs-drm snd_hda_intel"
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
else
  notok "the guest VGA has a DRM card node to hold (${CARD:-none})"
fi

# ------------------------------------------------------------ 5. stop
step "systemctl stop vfio-hookd"
bounded 90 systemctl stop vfio-hookd.service
eq "systemctl stop exits 0; the unit is inactive (not failed)" "$BRC $(systemctl is-active vfio-hookd.service)" "0 inactive"
eq "the unit's result is success" "$(systemctl show -p Result --value vfio-hookd.service)" success
owner=$(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.vfiohookd1 2>&1)
eq "the bus name org.vfiohookd1 is released" "$owner" "b false"
finish
