#!/bin/sh
# The kernel-tier guest test, run by /init INSIDE the QEMU guest (never on the
# host). Lines "ok - ..." / "not ok - ..." / "# ..." go to /results/tap; the
# host numbers them. Sections:
#   1. raw shell: find the devices, driver_override semantics, detach/reattach
#      the VGA+HDA pair by echo (also the benchmark baseline)
#   2. the project's CLI (cli.mjs drives dist/bin/vfio-hookctl.js)
#   3. more real-kernel facts: a VFIO group held by a container and a device
#      fd (vfio-helper, as QEMU holds it), a DRM node held during unbind
export PATH=/bin:/usr/bin
G=/repo/test/kernel/guest
. "$G/lib.sh"
note "guest: kernel $(uname -r), node $(node --version 2>&1), helper ${HELPER:-missing}"
fact kernel "$(uname -r)"

# ------------------------------------------------------------ 1. raw shell
# Two VGAs share the ids 1234:1111 (as the reference host's two cards do): the
# guest GPU is the one whose IOMMU group holds the HDA, the other is the host's.
VGAS="" HDA="" NIC=""
for d in "$PCI"/*; do
  case "$(cat "$d/vendor"):$(cat "$d/device"):$(cat "$d/class")" in
    0x1234:0x1111:0x0300*) VGAS="$VGAS ${d##*/}" ;;
    0x8086:0x293e:0x0403*) HDA=${d##*/} ;;
    0x8086:0x10d3:0x0200*) NIC=${d##*/} ;;
  esac
done
VGA="" HOSTVGA=""
for v in $VGAS; do
  if [ -n "$HDA" ] && [ "$(grp "$v")" = "$(grp "$HDA")" ]; then VGA=$v; else HOSTVGA=$v; fi
done
check "raw: HDA 8086:293e class 0x0403xx found (${HDA:-none})" [ -n "$HDA" ]
check "raw: guest VGA 1234:1111 class 0x0300xx in the HDA's IOMMU group found (${VGA:-none})" [ -n "$VGA" ]
check "raw: host VGA 1234:1111 (same ids) in another group found (${HOSTVGA:-none})" [ -n "$HOSTVGA" ]
check "raw: e1000e 8086:10d3 found (${NIC:-none})" [ -n "$NIC" ]
if [ -z "$VGA" ] || [ -z "$HDA" ]; then
  notok "raw: cannot go on without the VGA+HDA pair"
  exit 1
fi
GROUP=$(grp "$VGA")
eq "raw: the host VGA is the boot VGA" "$(cat "$PCI/$HOSTVGA/boot_vga" 2>/dev/null)" 1
eq "raw: the guest VGA is not the boot VGA" "$(cat "$PCI/$VGA/boot_vga" 2>/dev/null)" 0
eq "raw: host VGA starts on bochs-drm" "$(drv "$HOSTVGA")" bochs-drm
eq "raw: VGA and HDA share one IOMMU group ($GROUP)" "$(grp "$HDA")" "$GROUP"
check "raw: e1000e in another IOMMU group ($(grp "$NIC"))" test "$(grp "$NIC")" != "$GROUP" -a "$(grp "$NIC")" != none
eq "raw: VGA and HDA are the only devices in group $GROUP" "$(ls /sys/kernel/iommu_groups/"$GROUP"/devices | tr '\n' ' ')" "$VGA $HDA "
eq "raw: VGA starts on bochs-drm" "$(drv "$VGA")" bochs-drm
eq "raw: HDA starts on snd_hda_intel" "$(drv "$HDA")" snd_hda_intel
eq "raw: e1000e starts on e1000e" "$(drv "$NIC")" e1000e
DRM=$(ls "$PCI/$VGA/drm" 2>/dev/null | tr '\n' ' ')
CARD=$(ls "$PCI/$VGA/drm" 2>/dev/null | grep -m1 '^card')
check "raw: VGA has a DRM card node /dev/dri/${CARD:-none}" test -n "$CARD" -a -c "/dev/dri/$CARD"
fact devices "guest VGA $VGA, HDA $HDA (group $GROUP), host VGA $HOSTVGA (group $(grp "$HOSTVGA")), e1000e $NIC (group $(grp "$NIC")); drivers $(drv "$VGA"), $(drv "$HDA"), $(drv "$HOSTVGA"), $(drv "$NIC"); guest VGA drm dir: $DRM; host VGA drm dir: $(ls "$PCI/$HOSTVGA/drm" 2>/dev/null | tr '\n' ' '); boot_vga guest/host: $(cat "$PCI/$VGA/boot_vga" 2>/dev/null || echo absent)/$(cat "$PCI/$HOSTVGA/boot_vga" 2>/dev/null || echo absent)"
fact consoles "$(for c in /sys/class/vtconsole/*; do printf '%s bind=%s %s; ' "${c##*/}" "$(cat "$c/bind")" "$(cat "$c/name")"; done)"
fact no-vfio-node-before "/dev/vfio holds: $(ls /dev/vfio | tr '\n' ' ')"

# driver_override semantics, on the VGA (still bound to bochs-drm throughout)
o=$PCI/$VGA/driver_override
eq "raw: driver_override reads '(null)' when unset" "$(cat "$o")" "(null)"
fact override-initial "$(cat "$o")"
echo vfio-pci > "$o"
eq "raw: driver_override reads 'vfio-pci' after writing 'vfio-pci\\n'" "$(cat "$o")" vfio-pci
if [ -n "$HELPER" ]; then
  r=$(vfio-helper write "$o")
  fact override-zero-byte-write "write(fd, \"\", 0) -> $r; reads back '$(cat "$o")'"
  eq "raw: a 0-byte write(2) does not clear driver_override" "$(cat "$o")" vfio-pci
fi
: > "$o"
fact override-open-trunc-no-write "shell ': > driver_override' (open O_TRUNC, no write) -> reads back '$(cat "$o")'"
r=$(printf '' > "$o" 2>&1; echo "rc=$?")
fact override-printf-empty "printf '' > driver_override -> $r; reads back '$(cat "$o")'"
echo > "$o"
eq "raw: writing '\\n' clears driver_override to '(null)'" "$(cat "$o")" "(null)"
fact override-after-newline "$(cat "$o")"
eq "raw: VGA still on bochs-drm after the override games" "$(drv "$VGA")" bochs-drm

# detach/reattach by raw writes, timed step by step once
t=$(now_us)
echo vfio-pci > "$PCI/$VGA/driver_override"; a=$(ms_since "$t"); t=$(now_us)
echo "$VGA" > "$PCI/$VGA/driver/unbind"; b=$(ms_since "$t"); t=$(now_us)
echo "$VGA" > /sys/bus/pci/drivers_probe; c=$(ms_since "$t")
fact vga-detach-steps "override ${a} ms, unbind from bochs-drm ${b} ms, drivers_probe -> $(drv "$VGA") ${c} ms"
fact vfio-node-after-first-function "with only the VGA on vfio-pci: /dev/vfio has: $(ls /dev/vfio | tr '\n' ' ')"
t=$(now_us)
echo vfio-pci > "$PCI/$HDA/driver_override"; a=$(ms_since "$t"); t=$(now_us)
echo "$HDA" > "$PCI/$HDA/driver/unbind"; b=$(ms_since "$t"); t=$(now_us)
echo "$HDA" > /sys/bus/pci/drivers_probe; c=$(ms_since "$t")
fact hda-detach-steps "override ${a} ms, unbind from snd_hda_intel ${b} ms, drivers_probe -> $(drv "$HDA") ${c} ms"
eq "raw: detach puts the VGA on vfio-pci" "$(drv "$VGA")" vfio-pci
eq "raw: detach puts the HDA on vfio-pci" "$(drv "$HDA")" vfio-pci
check "raw: /dev/vfio/$GROUP appears" [ -c "/dev/vfio/$GROUP" ]
t=$(now_us)
echo > "$PCI/$VGA/driver_override"; a=$(ms_since "$t"); t=$(now_us)
echo "$VGA" > "$PCI/$VGA/driver/unbind"; b=$(ms_since "$t"); t=$(now_us)
echo "$VGA" > /sys/bus/pci/drivers_probe; c=$(ms_since "$t")
fact vga-reattach-steps "override clear ${a} ms, unbind from vfio-pci ${b} ms, drivers_probe -> $(drv "$VGA") ${c} ms"
t=$(now_us)
echo > "$PCI/$HDA/driver_override"; a=$(ms_since "$t"); t=$(now_us)
echo "$HDA" > "$PCI/$HDA/driver/unbind"; b=$(ms_since "$t"); t=$(now_us)
echo "$HDA" > /sys/bus/pci/drivers_probe; c=$(ms_since "$t")
fact hda-reattach-steps "override clear ${a} ms, unbind from vfio-pci ${b} ms, drivers_probe -> $(drv "$HDA") ${c} ms"
eq "raw: reattach gives the VGA back to bochs-drm" "$(drv "$VGA")" bochs-drm
eq "raw: reattach gives the HDA back to snd_hda_intel" "$(drv "$HDA")" snd_hda_intel
eq "raw: driver_override of both reads '(null)' after reattach" "$(ovr "$VGA") $(ovr "$HDA")" "(null) (null)"
fact vfio-node-after-reattach "/dev/vfio holds: $(ls /dev/vfio | tr '\n' ' ')"

# benchmark baseline: the same cycle, whole, three times (median)
raw_ms=""
for i in 1 2 3; do
  t=$(now_us); raw_detach "$VGA" "$HDA"; raw_reattach "$VGA" "$HDA"; raw_ms="$raw_ms $(ms_since "$t")"
done
eq "raw: pair back on bochs-drm + snd_hda_intel after 3 timed cycles" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
RAW_MEDIAN=$(echo "$raw_ms" | tr ' ' '\n' | grep . | sort -n | sed -n 2p)
note "bench raw shell detach+reattach runs (ms):$raw_ms"

# ------------------------------------------------------------ 1b. issue 14: consoles, frame buffer, on-busy release (graphics.sh)
. "$G/graphics.sh"

# ------------------------------------------------------------ 2. CLI
export VGA HDA NIC GROUP HOSTVGA
export CLI=/repo/${VFIOTEST_CLI:-dist/bin/vfio-hookctl.js}
node "$G/cli.mjs" > /tmp/cli.out 2>/tmp/cli.err
rc=$?
cat /tmp/cli.out >> "$TAP"; cat /tmp/cli.out
if [ -s /tmp/cli.err ]; then sed 's/^/#   cli.mjs stderr: /' /tmp/cli.err | tail -n 15 | tee -a "$TAP"; fi
grep -q '^# cli-done' /tmp/cli.out || notok "cli: cli.mjs ran to completion (exit $rc)"
ENGINE_MEDIAN=$(sed -n 's/^# engine-median-ms \([0-9]*\)$/\1/p' /tmp/cli.out)
NODE_MEDIAN=$(sed -n 's/^# node-startup-median-ms \([0-9]*\)$/\1/p' /tmp/cli.out)
INPROC_MEDIAN=$(sed -n 's/^# engine-inprocess-median-ms \([0-9]*\)$/\1/p' /tmp/cli.out)
if [ -n "$INPROC_MEDIAN" ] && [ -n "$RAW_MEDIAN" ] && [ "$RAW_MEDIAN" -gt 0 ]; then
  note "bench detach+reattach: the daemon's path (engine in-process, writer started ahead) $INPROC_MEDIAN ms, raw shell $RAW_MEDIAN ms, ratio $(awk -v e="$INPROC_MEDIAN" -v r="$RAW_MEDIAN" 'BEGIN{printf "%.1f", e / r}') (goal <= 2; median of 3, QEMU/TCG; the engine reads back every write, checks holders, host dependencies and viability)"
fi
if [ -n "$ENGINE_MEDIAN" ] && [ -n "$RAW_MEDIAN" ] && [ "$RAW_MEDIAN" -gt 0 ]; then
  ratio=$(awk -v e="$ENGINE_MEDIAN" -v r="$RAW_MEDIAN" 'BEGIN{printf "%.1f", e / r}')
  note "bench detach+reattach: vfio-hookctl $ENGINE_MEDIAN ms, raw shell $RAW_MEDIAN ms, ratio $ratio (median of 3, QEMU/TCG; two CLI processes, each with node startup ~${NODE_MEDIAN:-?} ms)"
else
  note "bench detach+reattach: engine n/a (CLI did not complete a cycle), raw shell ${RAW_MEDIAN:-n/a} ms (median of 3, QEMU/TCG)"
fi

# ------------------------------------------------------------ 2b. hold = "boot"
# The blog's initrd loop (driver_override, unbind, drivers_probe), then the
# daemon's start step on the real sysfs (hold-boot.mjs), then a reattach by hand.
for d in "$HDA" "$VGA"; do
  echo vfio-pci > "/sys/bus/pci/devices/$d/driver_override"
  [ -e "/sys/bus/pci/devices/$d/driver" ] && echo "$d" > "/sys/bus/pci/devices/$d/driver/unbind"
  echo "$d" > /sys/bus/pci/drivers_probe
done
eq "boot: the initrd loop put the pair on vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
HOLDRUN=$(mktemp -d)
VGA=$VGA HOLDRUN=$HOLDRUN node "$G/hold-boot.mjs" > /tmp/hold.out 2>&1
note "hold-boot.mjs: $(head -c 600 /tmp/hold.out | tr '\n' ' ')"
check "boot: both functions adopted (original driver unknown) and marked held at boot" grep -q "^ok|2|.*=boot/false .*=boot/false|" /tmp/hold.out
check "boot: the VM's release leaves them held" grep -q "held at boot" /tmp/hold.out
eq "boot: the pair is still on vfio-pci after the release" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
node "$CLI" --run-root "$HOLDRUN" reattach "$VGA" > /tmp/hold-re.out 2>&1
note "reattach: $(head -c 400 /tmp/hold-re.out | tr '\n' ' ')"
eq "boot: a reattach by hand lets the kernel choose: bochs-drm and snd_hda_intel" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
eq "boot: driver_override of both cleared" "$(ovr "$VGA") $(ovr "$HDA")" "(null) (null)"

# make sure section 3 starts from a clean pair whatever the CLI did
[ "$(drv "$VGA") $(drv "$HDA")" = "bochs-drm snd_hda_intel" ] || raw_reattach "$VGA" "$HDA"

# ------------------------------------------------------------ 2c. host tuning (issue 14)
. "$G/hugepages.sh"

# ------------------------------------------------------------ 3. more facts
. "$G/facts.sh"

eq "e1000e never left its driver" "$(drv "$NIC")" e1000e
eq "the host VGA never left bochs-drm" "$(drv "$HOSTVGA")" bochs-drm
exit 0
