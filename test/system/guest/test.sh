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
#   5. systemctl stop during a prepare held in the HDA's unbind: the prepare finishes, then the daemon exits
#   6. libvirtd, libvirt-dbus and virsh: QEMU holds the group and maps the shm files; a reattach is
#      refused; reload; the test user's agent starts the VM's user units (stand-in clients); kill -9 and
#      Restart=on-failure; virsh destroy releases and the units stop
#   7. the daemon stopped (then blocked) across the VM's stop, and started again: the pair comes back
#   8. systemctl poweroff with the VM running (vfio-system-late.service and run.sh check what followed)
R=/results
TAP=$R/tap
PCI=/sys/bus/pci/devices
HOOK=/etc/libvirt/hooks/qemu.d/vfio-hookd
VM=systest
TUSER=systest TUID=4711
LG=systest-lg SCREAM=systest-scream
# Budgets (s), for a machine twice as slow as the 2-core one measured: a cold
# node start of the daemon took up to 28 s there, a daemon-reload 6 s.
NODE=60
HOOKCALL=60
INSTALL=$(( 3 * NODE + 420 ))   # node -p, the file copies (one cp per file), daemon-reload, the daemon's start

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
  if [ $BRC -eq 124 ] || [ $BRC -eq 137 ]; then notok "timed out in step $(cat $R/step): '$*' took more than $s s"; fi
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
. /repo/test/system/guest/cpus.sh   # issue 14: CPU isolation against this systemd

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
# The shm files belong to the test user, group kvm (QEMU's, as libvirt-qemu's
# primary group); the user's agent starts the shipped Looking Glass and Scream
# units for them while the VM runs.
# write-timeout: the slow-prepare step keeps one unbind waiting for a few seconds.
cat > /etc/vfio-hookd/vfio-hookd.toml <<TOML
[daemon]
write-timeout = "60s"

[vm.$VM]
devices = ["$VGA"]
user = "$TUSER"
units = ["looking-glass-client@$LG.service", "scream-receiver@$SCREAM.service"]

[vm.$VM.looking-glass]
size = "32M"
name = "$LG"
group = "kvm"

[vm.$VM.scream]
size = "2M"
name = "$SCREAM"
group = "kvm"
TOML
chmod 0644 /etc/vfio-hookd/vfio-hookd.toml
ok "configuration /etc/vfio-hookd/vfio-hookd.toml names $VGA, shm files $LG and $SCREAM and two user units of '$TUSER' for VM '$VM'"
# A diskless TCG domain (no KVM in the guest): QEMU holds the group and maps
# the shm files; it is started paused (no OS to run, and a running TCG vCPU
# would take the guest's one CPU from everything else).
cat > /tmp/domain.xml <<XML
<domain type='qemu'>
  <name>$VM</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <shmem name='$LG'><model type='ivshmem-plain'/><size unit='M'>32</size></shmem>
    <shmem name='$SCREAM'><model type='ivshmem-plain'/><size unit='M'>2</size></shmem>
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

# The V8 code cache (CacheDirectory=, lib/daemon/code-cache.ts): written ten seconds after a start, used by the next.
cache=/var/cache/vfio-hookd/vfio-hookd.v8cache
i=0; while [ ! -s $cache ] && [ $i -lt 240 ]; do sleep 0.5; i=$((i + 1)); done
eq "the daemon wrote its V8 code cache in CacheDirectory= (root's, 0600, in a 0700 folder)" \
  "$(stat -c '%U %a' $cache 2>&1) $(stat -c '%a' /var/cache/vfio-hookd 2>&1)" "root 600 700"
step "systemctl restart vfio-hookd while the VM runs"
pid0=$(systemctl show -p MainPID --value vfio-hookd.service)
bounded $NODE systemctl restart vfio-hookd.service
eq "systemctl restart vfio-hookd exits 0 and the daemon is active again" "$BRC $(systemctl is-active vfio-hookd.service)" "0 active"
pid1=$(systemctl show -p MainPID --value vfio-hookd.service)
eq "the restarted daemon started from the code cache (its debug line in the journal)" \
  "$(journalctl -b -q --no-pager -o cat _PID="$pid1" -p debug 2>&1 | grep -c '^vfio-hookd: V8 code cache: used$')" 1
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

# ------------------------------------------------------------ 4b. issue 14: stop-units and single-gpu against this systemd
. /repo/test/system/guest/units.sh

# ------------------------------------------------------------ 5. libvirtd, QEMU and the user's agent
VIRSH=120   # one virsh start or destroy: the hook's call, QEMU's start under TCG
# waitfor SECS WHAT CMD...: run CMD until it succeeds, at most SECS; says "timed out in step N" when not.
# A 0.2 s poll: the shell has no event for a driver link, a cgroup or a unit state; each
# wait is bounded by its own budget.
waitfor() {
  ws=$1 what=$2; shift 2
  read -r wu _ < /proc/uptime; wend=$(( ${wu%.*} + ws ))
  while ! "$@"; do
    read -r wu _ < /proc/uptime
    if [ "${wu%.*}" -ge "$wend" ]; then notok "timed out in step $(cat $R/step): $what not within $ws s"; return 1; fi
    sleep 0.2
  done
}
pair_is() { [ "$(drv "$VGA") $(drv "$HDA")" = "$1" ]; }
qemu_pid() { cat "/run/libvirt/qemu/$VM.pid" 2>/dev/null; }
# holds PID PATH: PID has PATH open (one ls for all its fds: a readlink per fd costs 80 ms under TCG)
holds() { ls -l "/proc/$1/fd" 2>/dev/null | grep -q -- "-> $2\$"; }
usys() { bounded 30 setpriv --reuid=$TUID --regid=$TUID --init-groups env XDG_RUNTIME_DIR=/run/user/$TUID systemctl --user "$@"; }
# a unit of the test user's manager: its main pid (0 when it does not run), asked of that manager
upid() { usys show -p MainPID --value "$1" 2>/dev/null; }
unit_runs() { p=$(upid "$1") && [ -n "$p" ] && [ "$p" != 0 ]; }
unit_gone() { [ "$(usys is-active "$1" 2>/dev/null)" != active ]; }
vstart() {
  bounded $VIRSH virsh start --paused "$VM" > /tmp/virsh.out 2>&1
  eq "virsh start --paused $VM exits 0 $1" "$BRC" 0
  [ $BRC -eq 0 ] || note "virsh: $(head -c 600 /tmp/virsh.out | tr '\n' ' ')"
}
vdestroy() {
  bounded $VIRSH virsh destroy "$VM" > /tmp/virsh.out 2>&1
  eq "virsh destroy $VM exits 0 $1" "$BRC" 0
  [ $BRC -eq 0 ] || note "virsh: $(head -c 600 /tmp/virsh.out | tr '\n' ' ')"
}
LGU=looking-glass-client@$LG.service
SCU=scream-receiver@$SCREAM.service

step "systemctl stop vfio-hookd during a prepare (a slow unbind)"
# The slow point a test can make: snd_hda_intel's unbind waits (snd_card_free)
# until every open file of the sound card is closed, and the daemon does not
# count /dev/snd among a card's holders. A process holding the HDA's control
# node keeps the prepare inside that unbind until the test lets it go.
CTL=$(ls -d "$PCI/$HDA"/sound/card*/controlC* 2>/dev/null | head -n 1)
CTL=${CTL##*/}
if [ -z "$CTL" ] || ! [ -c "/dev/snd/$CTL" ]; then
  notok "the HDA has a sound control node to hold ('${CTL}')"
else
  sleep 600 < "/dev/snd/$CTL" &
  holder=$!
  ( hook prepare begin -; echo "$BRC" > /tmp/prepare.rc ) &
  hookjob=$!
  # the daemon is inside the HDA's unbind once its driver_override says vfio-pci while its driver is still bound
  in_unbind() { [ "$(cat "$PCI/$HDA/driver_override")" = vfio-pci ]; }
  waitfor $HOOKCALL "the prepare inside the HDA's unbind (its driver_override set)" in_unbind
  if kill -0 "$hookjob" 2>/dev/null; then ok "the prepare is held inside the HDA's unbind (hook still running, '$CTL' held by pid $holder)"; else notok "the prepare is held inside the HDA's unbind (the hook already returned $(cat /tmp/prepare.rc 2>/dev/null))"; fi
  bounded 30 systemctl stop --no-block vfio-hookd.service
  deactivating() { [ "$(systemctl show -p ActiveState --value vfio-hookd.service)" = deactivating ]; }
  waitfor 30 "vfio-hookd deactivating after systemctl stop" deactivating &&
    ok "systemctl stop during the prepare: the daemon is stopping and waits for the hook ($(systemctl show -p StatusText --value vfio-hookd.service))"
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
  wait "$hookjob"
  stopped() { [ "$(systemctl show -p ActiveState --value vfio-hookd.service)" = inactive ]; }
  waitfor 90 "vfio-hookd inactive after the prepare" stopped
  eq "the daemon exited only after the hook in flight had returned (result success)" \
    "$(systemctl show -p Result --value vfio-hookd.service) $([ -s /tmp/prepare.rc ] && echo returned)" "success returned"
  # The daemon lets a hook in flight finish or roll back (docs/architecture.md): either way nothing is half-bound.
  case "$(cat /tmp/prepare.rc) $(drv "$VGA") $(drv "$HDA") $(cat "$PCI/$VGA/driver_override") $(cat "$PCI/$HDA/driver_override")" in
    "0 vfio-pci vfio-pci vfio-pci vfio-pci") ok "the prepare in flight finished: hook exit 0, both functions on vfio-pci" ;;
    "1 bochs-drm snd_hda_intel (null) (null)")
      ok "the prepare in flight was rolled back: hook exit 1, both functions on their host drivers, no override left"
      note "the hook's sentence: $(head -n 1 /tmp/hook.err)" ;;
    *) notok "nothing is half-bound after the stop (hook exit $(cat /tmp/prepare.rc), drivers $(drv "$VGA") $(drv "$HDA"), overrides $(cat "$PCI/$VGA/driver_override") $(cat "$PCI/$HDA/driver_override")): $(head -n 1 /tmp/hook.err)" ;;
  esac
  bounded $((2 * NODE)) systemctl start vfio-hookd.service
  hook release end shutdown
  eq "after a start, the release hook gives the pair back" "$BRC $(systemctl is-active vfio-hookd.service) $(drv "$VGA") $(drv "$HDA")" "0 active bochs-drm snd_hda_intel"
fi

step "libvirtd with the installed hook, and the test user's manager"
# The test user's manager (and in it the agent that install.sh enabled for every
# user) comes up through logind's lingering while libvirtd starts.
mkdir -p /home/$TUSER && chown $TUID:$TUID /home/$TUSER
bounded 60 loginctl enable-linger $TUSER
eq "loginctl enable-linger $TUSER exits 0" "$BRC" 0
cp /harness/standin/looking-glass-client /harness/standin/scream /usr/local/bin/
note "looking-glass-client and scream are not on this machine: /usr/local/bin has stand-ins that open the shm file and hold it, started by the shipped units"
t0=$(up)
bounded 120 systemctl start libvirtd.service
eq "systemctl start libvirtd exits 0 and libvirtd is active" "$BRC $(systemctl is-active libvirtd.service)" "0 active"
note "libvirtd started in $(awk -v a="$(up)" -v b="$t0" 'BEGIN{printf "%.0f", a - b}') s"
# libvirt-dbus (bus-activated, as user libvirtdbus) from now on: the daemon follows
# it, and with it releases a VM that stopped while the daemon was down.
bounded 120 busctl --system --timeout=110 call org.libvirt /org/libvirt/QEMU org.freedesktop.DBus.Properties Get ss org.libvirt.Connect Version > /tmp/busctl.out 2>&1
eq "libvirt-dbus answers on the system bus (bus-activated)" "$BRC" 0
[ $BRC -eq 0 ] || note "busctl: $(head -c 300 /tmp/busctl.out)"
bounded 60 virsh define /tmp/domain.xml > /tmp/virsh.out 2>&1
eq "virsh define of the diskless TCG domain with the pair as managed='no' hostdevs" "$BRC" 0
[ $BRC -eq 0 ] || note "virsh: $(head -c 600 /tmp/virsh.out | tr '\n' ' ')"

step "a refused virsh start (a process holds the DRM node)"
CARD=$(ls "$PCI/$VGA/drm" 2>/dev/null | grep -m1 '^card')
if [ -n "$CARD" ] && [ -c "/dev/dri/$CARD" ]; then
  sleep 600 < "/dev/dri/$CARD" &
  holder=$!
  bounded $VIRSH virsh start --paused "$VM" > /tmp/virsh.out 2>&1
  eq "virsh start exits 1" "$BRC" 1
  if grep -q "vfio-hookd: Cannot detach .*(pid $holder) through '/dev/dri/$CARD'" /tmp/virsh.out; then
    ok "virsh's error carries the daemon's sentence naming pid $holder"
  else
    notok "virsh's error carries the daemon's sentence naming pid $holder (got '$(head -c 400 /tmp/virsh.out | tr '\n' ' ')')"
  fi
  eq "the refusal changed nothing: the pair on its host drivers, no override, the domain shut off" \
    "$(drv "$VGA") $(drv "$HDA") $(cat "$PCI/$VGA/driver_override") $(virsh domstate "$VM" 2>&1)" "bochs-drm snd_hda_intel (null) shut off"
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
else
  notok "the guest VGA has a DRM card node to hold (${CARD:-none})"
fi

step "virsh start: libvirtd -> the hook -> the daemon's prepare -> QEMU holds the group"
t0=$(up)
vstart "(prepare through the hook)"
note "virsh start took $(awk -v a="$(up)" -v b="$t0" 'BEGIN{printf "%.0f", a - b}') s (libvirt's capability cache: $(ls /var/cache/libvirt/qemu/capabilities 2>/dev/null | wc -l) file(s))"
if [ $BRC -ne 0 ]; then
  notok "the domain did not start: the libvirt steps cannot run"
  bounded 20 journalctl -b -u libvirtd --no-pager -n 15 | sed 's/^/#   libvirtd: /' | tee -a "$TAP"
  finish
fi
eq "the pair is on vfio-pci while the VM runs" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
QPID=$(qemu_pid)
if [ -n "$QPID" ] && holds "$QPID" "/dev/vfio/$GROUP" && holds "$QPID" /dev/vfio/vfio; then
  ok "QEMU (pid $QPID) holds /dev/vfio/$GROUP and /dev/vfio/vfio (its /proc/$QPID/fd)"
else
  notok "QEMU (pid '${QPID}') holds /dev/vfio/$GROUP and /dev/vfio/vfio (fds: $(ls -l /proc/$QPID/fd 2>/dev/null | grep -o '/dev/vfio.*' | tr '\n' ' '))"
fi
eq "the Looking Glass file has its size, owner, group and mode" "$(stat -c '%s %U %G %a' /dev/shm/$LG 2>&1)" "33554432 $TUSER kvm 660"
eq "the Scream file has its size, owner, group and mode" "$(stat -c '%s %U %G %a' /dev/shm/$SCREAM 2>&1)" "2097152 $TUSER kvm 660"
n=$(grep -c -e "/dev/shm/$LG\$" -e "/dev/shm/$SCREAM\$" /proc/$QPID/maps 2>/dev/null)
if [ "${n:-0}" -ge 2 ]; then ok "QEMU maps both shm files (they were ours before it opened them)"; else notok "QEMU maps both shm files ($n mappings)"; fi
eq "the daemon's STATUS= names the hook libvirtd ran last" "$(systemctl show -p StatusText --value vfio-hookd.service)" "Ready; last: started begin of '$VM'"
bounded 30 busctl --system call org.vfiohookd1 /org/vfiohookd1 org.vfiohookd1.Manager ReattachDevice s "$VGA" > /tmp/busctl.out 2>&1
if [ $BRC -ne 0 ]; then ok "ReattachDevice while QEMU holds the group is refused: '$(head -n 1 /tmp/busctl.out)'"; else notok "ReattachDevice while QEMU holds the group is refused (it succeeded)"; fi
eq "the refused reattach changed nothing (pair on vfio-pci, QEMU alive)" "$(drv "$VGA") $(drv "$HDA") $(kill -0 "$QPID" 2>/dev/null && echo alive)" "vfio-pci vfio-pci alive"

step "systemctl reload vfio-hookd while the VM runs"
pid0=$(systemctl show -p MainPID --value vfio-hookd.service)
bounded 60 systemctl reload vfio-hookd.service
eq "systemctl reload exits 0; same process, still active; the pair still on vfio-pci" \
  "$BRC $(systemctl show -p MainPID --value vfio-hookd.service) $(systemctl is-active vfio-hookd.service) $(drv "$VGA") $(drv "$HDA")" \
  "0 $pid0 active vfio-pci vfio-pci"
# A broken file fails the reload (ExecReload's Reload() returns the error) and keeps the running configuration.
cp /etc/vfio-hookd/vfio-hookd.toml /tmp/vfio-hookd.toml.good
printf '[vm.%s\n' "$VM" >> /etc/vfio-hookd/vfio-hookd.toml
jl0=$(journalctl -u vfio-hookd.service -o cat --no-pager 2>/dev/null | wc -l)
bounded 60 systemctl reload vfio-hookd.service 2> /tmp/reload.err
rrc=$BRC
cp /tmp/vfio-hookd.toml.good /etc/vfio-hookd/vfio-hookd.toml
eq "systemctl reload of a broken file fails; same process, still active; the pair still on vfio-pci" \
  "$([ "$rrc" -ne 0 ] && echo failed) $(systemctl show -p MainPID --value vfio-hookd.service) $(systemctl is-active vfio-hookd.service) $(drv "$VGA") $(drv "$HDA")" \
  "failed $pid0 active vfio-pci vfio-pci"
if journalctl -u vfio-hookd.service -o cat --no-pager 2>/dev/null | tail -n +"$((jl0 + 1))" | grep -q "keeping the running configuration"; then
  ok "the journal says why the reload failed and that the running configuration stays"
else
  notok "the journal says why the reload failed (systemctl said: '$(head -c 300 /tmp/reload.err)')"
fi
bounded 60 systemctl reload vfio-hookd.service
eq "the good file reloads again" "$BRC" 0

step "the test user's agent starts the VM's units"
waitfor 120 "user@$TUID.service active" systemctl -q is-active user@$TUID.service &&
  ok "user@$TUID.service runs (lingering through logind)"
waitfor 150 "$LGU running in the user's manager" unit_runs "$LGU" &&
  waitfor 30 "$SCU running in the user's manager" unit_runs "$SCU"
p1=$(upid "$LGU") p2=$(upid "$SCU")
if [ -n "$p1" ] && holds "$p1" "/dev/shm/$LG" && [ -n "$p2" ] && holds "$p2" "/dev/shm/$SCREAM"; then
  ok "the stand-ins for looking-glass-client (pid $p1) and scream (pid $p2) hold their shm files"
else
  notok "the stand-ins hold their shm files (pids '$p1' '$p2')"
fi
eq "systemctl --user is-active: the agent and both units" "$(usys is-active vfio-hookd-agent.service "$LGU" "$SCU" | tr '\n' ' ')" "active active active "

step "kill -9 the daemon while the VM runs: Restart=on-failure"
pid0=$(systemctl show -p MainPID --value vfio-hookd.service)
r0=$(systemctl show -p NRestarts --value vfio-hookd.service)
kill -9 "$pid0"
restarted() {
  [ "$(systemctl show -p ActiveState --value vfio-hookd.service)" = active ] || return 1
  rn=$(systemctl show -p NRestarts --value vfio-hookd.service)
  [ "$rn" -gt "$r0" ] && [ "$(systemctl show -p MainPID --value vfio-hookd.service)" != "$pid0" ]
}
waitfor $((2 * NODE + 30)) "systemd restarted vfio-hookd after kill -9" restarted &&
  ok "systemd restarted the daemon (pid $pid0 -> $(systemctl show -p MainPID --value vfio-hookd.service), NRestarts $r0 -> $rn)"
eq "the state is intact: the pair still on vfio-pci, QEMU alive" "$(drv "$VGA") $(drv "$HDA") $(kill -0 "$QPID" 2>/dev/null && echo alive)" "vfio-pci vfio-pci alive"
eq "the user's units still run" "$(unit_runs "$LGU" && unit_runs "$SCU" && echo yes)" yes

step "virsh destroy: the hook's release gives the pair back; the agent stops the units"
vdestroy "(release through the hook)"
eq "the pair is back on bochs-drm and snd_hda_intel" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
eq "driver_override of both is cleared" "$(cat "$PCI/$VGA/driver_override") $(cat "$PCI/$HDA/driver_override")" "(null) (null)"
if kill -0 "$QPID" 2>/dev/null; then notok "QEMU (pid $QPID) is gone"; else ok "QEMU (pid $QPID) is gone"; fi
if [ -n "$p1" ] && [ -n "$p2" ]; then
  waitfor 60 "$LGU and $SCU stopped" eval 'unit_gone "$LGU" && unit_gone "$SCU"' &&
    ok "the agent stopped $LGU and $SCU after the VM"
else
  notok "the agent stopped $LGU and $SCU after the VM (they never ran: see step 'the test user's agent')"
fi

step "daemon stopped while the VM runs, then virsh destroy (the hook's call starts it again)"
vstart "(second run)"
eq "the pair is on vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
bounded 90 systemctl stop vfio-hookd.service
eq "systemctl stop vfio-hookd exits 0 while the VM runs" "$BRC $(systemctl is-active vfio-hookd.service)" "0 inactive"
vdestroy "(the hook's busctl call activates the daemon through dbus-org.vfiohookd1.service)"
# Two documented ways back, depending on how long the daemon's cold start takes:
# within dbus-daemon's activation timeout (25 s) the activated daemon answers the
# hook's release; beyond it the hook gets no answer, and the daemon, once up,
# finds through libvirt-dbus that the VM stopped and releases it.
waitfor $((3 * NODE)) "the pair back on its host drivers after the destroy" pair_is "bochs-drm snd_hda_intel"
bounded 30 journalctl -b -u vfio-hookd.service -o cat MESSAGE_ID=74a64f6328dd407e8f6386af23fba335 VFIO_DOMAIN=$VM > /tmp/journal.txt 2>/dev/null
how="the hook's call started the daemon, which released it"
[ -s /tmp/journal.txt ] && how="the hook got no answer within dbus-daemon's activation timeout; the daemon, once up, released the stopped VM (libvirt-dbus)"
eq "the pair is back on bochs-drm and snd_hda_intel and the daemon is active ($how)" "$(drv "$VGA") $(drv "$HDA") $(systemctl is-active vfio-hookd.service)" "bochs-drm snd_hda_intel active"
bounded 30 journalctl -b -u dbus.service -o cat > /tmp/dbus.txt 2>/dev/null
if grep -q "Failed to activate service 'org.vfiohookd1': timed out" /tmp/dbus.txt; then
  note "finding: dbus-daemon gave up activating org.vfiohookd1 after 25 s: the daemon's cold start was longer ($(grep -c "Failed to activate service 'org.vfiohookd1'" /tmp/dbus.txt) time(s) this boot)"
fi

step "daemon down (its start blocked) across the VM's stop, then started: libvirt-dbus says the VM stopped"
vstart "(third run)"
eq "the pair is on vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
# A runtime drop-in that makes any start fail at once, so the hook's call
# cannot activate the daemon (a mask cannot: the unit lives in /etc).
mkdir -p /run/systemd/system/vfio-hookd.service.d
printf '[Service]\nExecStartPre=/bin/false\nRestart=no\n' > /run/systemd/system/vfio-hookd.service.d/50-system-tier-block.conf
bounded 60 systemctl daemon-reload
bounded 90 systemctl stop vfio-hookd.service
eq "systemctl stop exits 0; the unit is inactive (not failed)" "$BRC $(systemctl is-active vfio-hookd.service)" "0 inactive"
eq "the unit's result is success" "$(systemctl show -p Result --value vfio-hookd.service)" success
owner=$(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.vfiohookd1 2>&1)
eq "the bus name org.vfiohookd1 is released" "$owner" "b false"
vdestroy "(the hook finds no daemon: nothing done)"
eq "with the daemon down the pair stays on vfio-pci, QEMU gone" "$(drv "$VGA") $(drv "$HDA") $(kill -0 "$(qemu_pid)" 2>/dev/null || echo gone)" "vfio-pci vfio-pci gone"
rm -f /run/systemd/system/vfio-hookd.service.d/50-system-tier-block.conf
bounded 60 systemctl daemon-reload
systemctl reset-failed vfio-hookd.service 2>/dev/null
bounded $((2 * NODE)) systemctl start vfio-hookd.service
eq "systemctl start vfio-hookd exits 0" "$BRC" 0
waitfor 60 "the pair back on its host drivers after the daemon's start" pair_is "bochs-drm snd_hda_intel" &&
  ok "the started daemon released the stopped VM: the pair is back on bochs-drm and snd_hda_intel"
bounded 30 journalctl -b -u vfio-hookd.service -o cat MESSAGE_ID=74a64f6328dd407e8f6386af23fba335 VFIO_DOMAIN=$VM > /tmp/journal.txt 2>/dev/null
if [ -s /tmp/journal.txt ]; then
  ok "the journal says why: '$(head -n 1 /tmp/journal.txt | cut -c1-200)'"
else
  notok "the journal has the daemon's stale-release entry (MESSAGE_ID 74a64f63...) for VM '$VM'"
fi

step "poweroff with the VM running"
vstart "(fourth run, for the shutdown)"
eq "the pair is on vfio-pci before the poweroff" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
# vfio-system-late.service writes the journal and the drivers when it stops, after
# libvirtd, vfio-hookd and the VM's scope; run.sh checks them.
echo "$VGA $HDA" > $R/pair
: > $R/poweroff-requested
note "systemctl poweroff at $(up) s: run.sh reads the release from the journal saved at shutdown"
note "system tier steps done at $(up) s of guest uptime"
say "# guest-done rc=$FAILED"
sync
systemctl --no-block poweroff
exit 0
