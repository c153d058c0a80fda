# Section 3 of the guest test (sourced by test.sh, INSIDE the QEMU guest):
# what the real kernel does when a VFIO group is held open, attached to a
# container with a device fd (as QEMU holds it while a VM runs), and when a
# DRM node is held during unbind. Needs vfio-helper for the ioctls.
# In: VGA HDA GROUP, lib.sh. Leaves the pair on its host drivers.

# unbind_bg ADDR OUT: start an unbind in the background (it may block in the
# kernel where no signal frees it, so never wait on it blindly)
unbind_bg() {
  if [ -n "$HELPER" ]; then vfio-helper write "$PCI/$1/driver/unbind" "$1" > "$2" 2>&1 &
  else (echo "$1" > "$PCI/$1/driver/unbind" && echo ok || echo err) > "$2" 2>&1 & fi
  UNBIND_PID=$!
}
gone() { ! kill -0 "$1" 2>/dev/null; }

# --- 3a. /dev/vfio/GROUP merely open (no container)
raw_detach "$VGA" "$HDA"
eq "facts: pair on vfio-pci for the hold tests" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
sleep 1000 2>/tmp/open.err <> "/dev/vfio/$GROUP" &
OPEN_PID=$!
sleep 0.3
if gone "$OPEN_PID"; then
  fact group-open-plain "sh '<>' open of /dev/vfio/$GROUP failed: $(cat /tmp/open.err)"
else
  fact group-open-plain "/dev/vfio/$GROUP opened O_RDWR by a plain process (pid $OPEN_PID, no container)"
  if [ -n "$HELPER" ]; then
    fact group-second-open "$(timeout -s KILL 10 vfio-helper hold "$GROUP" 2>&1 | grep -m1 open-group)"
  fi
  bw "$PCI/$HDA/driver_override" "
"
  t=$(now_us); bw "$PCI/$HDA/driver/unbind" "$HDA" 10
  fact group-open-unbind-vfio "unbind HDA from vfio-pci with the group fd open (no container): $BW_MSG (rc $BW_RC) in $(ms_since "$t") ms"
  t=$(now_us); bw /sys/bus/pci/drivers_probe "$HDA" 20
  fact group-open-probe-host "drivers_probe HDA (override cleared) with the group fd open (no container): $BW_MSG in $(ms_since "$t") ms -> driver $(drv "$HDA")"
  kill "$OPEN_PID"; wait "$OPEN_PID" 2>/dev/null
  raw_detach "$HDA"
fi
kill "$OPEN_PID" 2>/dev/null

# --- 3b. group in a container, type1 IOMMU set, VGA device fd open (as QEMU)
if [ -z "$HELPER" ]; then
  notok "facts: vfio-helper present in the guest (gcc -static on the host) to hold a VFIO container"
else
  eq "facts: pair on vfio-pci before the container test" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
  vfio-helper hold "$GROUP" "$VGA" > /tmp/hold.out 2>&1 &
  HOLD_PID=$!
  wait_for 'grep -q "^ready" /tmp/hold.out || gone $HOLD_PID' 100
  fact container-hold "$(tr '\n' ';' < /tmp/hold.out)"
  check "facts: helper attached group $GROUP to a type1 container and opened the VGA device fd" \
    grep -q "^device-fd ok" /tmp/hold.out
  # HDA: no device fd of its own, but its group is owned by the container
  bw "$PCI/$HDA/driver_override" "
"
  t=$(now_us); bw "$PCI/$HDA/driver/unbind" "$HDA" 10
  fact container-unbind-hda "unbind HDA (no device fd, group in container) from vfio-pci: $BW_MSG (rc $BW_RC) in $(ms_since "$t") ms -> driver $(drv "$HDA")"
  n0=$(dmesg | wc -l)
  t=$(now_us); bw /sys/bus/pci/drivers_probe "$HDA" 20
  PROBE_MSG=$BW_MSG
  fact container-probe-host "drivers_probe HDA for snd_hda_intel while the group is in a container: $BW_MSG in $(ms_since "$t") ms -> driver $(drv "$HDA")"
  new=$(dmesg | tail -n +$((n0 + 1)) | grep -v vgaarb | tail -n 3 | sed 's/^\[[^]]*\] //' | tr '\n' '|')
  fact container-probe-dmesg "kernel log during that probe: ${new:-(nothing)}"
  case "$PROBE_MSG" in *EINVAL*|*"nvalid argument"*) e=1 ;; *) e=0 ;; esac
  check "facts: drivers_probe for the host driver fails with EINVAL while the group is in a container ($PROBE_MSG)" [ $e = 1 ]
  eq "facts: and leaves the HDA driverless" "$(drv "$HDA")" none
  # VGA: its device fd is open, unbinding from vfio-pci must block until released
  bw "$PCI/$VGA/driver_override" "
"
  t=$(now_us); unbind_bg "$VGA" /tmp/unbind.out
  sleep 3
  if gone "$UNBIND_PID"; then
    fact container-unbind-vga "unbind VGA from vfio-pci with its device fd open did NOT block: $(cat /tmp/unbind.out) after $(ms_since "$t") ms"
    notok "facts: unbind from vfio-pci blocks while the device fd is held"
  else
    ok "facts: unbind from vfio-pci blocks while the device fd is held (still blocked after 3 s)"
    # Which attribute reads wait on the device lock the blocked unbind holds: each
    # read in the background (a task waiting on a mutex ignores even SIGKILL).
    blocked=""
    for a in vendor device class revision driver_override boot_vga reset_method resource; do
      cat "$PCI/$VGA/$a" > /dev/null 2>&1 &
      eval "cat_$a=\$!"
    done
    sleep 1
    for a in vendor device class revision driver_override boot_vga reset_method resource; do
      eval "p=\$cat_$a"; gone "$p" || blocked="$blocked $a"
    done
    fact override-read-blocks "reads of VGA's attributes still waiting 1 s into the blocked unbind (kernel $(uname -r)):${blocked:- none}"
    # The engine reads every attribute synchronously but driver_override, which it reads on the
    # thread pool, bounded (lib/pci/fs-reads.ts): whether it waits differs between kernels.
    eq "facts: no attribute the engine reads synchronously waits on the lock a blocked unbind holds" \
      "$(for a in $blocked; do [ "$a" = driver_override ] || printf '%s ' "$a"; done)" ""
    # The project's reads meanwhile (locked-read.mjs): bounded, the event loop free.
    VGA=$VGA HDA=$HDA node "$G/locked-read.mjs" > /tmp/locked-read.out 2>&1 &
    LR_PID=$!
    wait_for 'grep -q "^locked-read|" /tmp/locked-read.out || gone $LR_PID' 600
    IFS='|' read -r _ lr_hda lr_vga lr_s lr_ticks < /tmp/locked-read.out
    fact locked-read "through the port during the blocked unbind: HDA binding $lr_hda; VGA read: $lr_vga after $lr_s s, $lr_ticks timer ticks meanwhile"
    eq "locked read: the other function's binding reads at once" "$lr_hda" "$(drv "$HDA")"
    case " $blocked " in
    *" driver_override "*)
      case "$lr_vga" in "DeviceBusy: Reading '$PCI/$VGA/driver_override' did not return within 10000 ms: the kernel holds the device's lock"*) e=1 ;; *) e=0 ;; esac
      check "locked read: where driver_override waits, VGA's device read rejects with DeviceBusy naming it and the lock" [ $e = 1 ]
      check "locked read: the event loop ran while the read waited (timer ticks: ${lr_ticks:-none})" [ "${lr_ticks:-0}" -ge 20 ] ;;
    *)
      case "$lr_vga" in "read "*) e=1 ;; *) e=0 ;; esac
      check "locked read: where driver_override does not wait, VGA's device read returns ($lr_vga)" [ $e = 1 ]
      check "locked read: and well before the bound (${lr_s:-?} s)" [ "${lr_s%%.*}" -lt 5 ] ;;
    esac
    t2=$(now_us)
    kill "$HOLD_PID"
    if wait_for "gone $UNBIND_PID" 150; then
      fact container-unbind-vga "unbind VGA from vfio-pci with its device fd open blocked; completed ($(cat /tmp/unbind.out)) $(ms_since "$t2") ms after the holder closed its fds, $(ms_since "$t") ms in all; driver now $(drv "$VGA")"
      ok "facts: the blocked unbind completes once the holder closes the fds"
    else
      fact container-unbind-vga "unbind VGA still blocked 15 s after the holder was killed"
      notok "facts: the blocked unbind completes once the holder closes the fds"
    fi
  fi
  kill "$HOLD_PID" 2>/dev/null; wait "$HOLD_PID" 2>/dev/null
  if [ -n "${LR_PID:-}" ]; then
    # The lock is free again: the stuck read returns, and only then can node exit.
    if wait_for "gone $LR_PID" 300; then ok "locked read: node exits once the lock is released"
    else notok "locked read: node exits once the lock is released (still running 30 s after)"; kill -9 "$LR_PID" 2>/dev/null; fi
  fi
  fact container-dmesg "$(dmesg | grep -iE 'blocked until|device request|in use' | grep -v vgaarb | tail -n 3 | sed 's/^\[[^]]*\] //' | tr '\n' '|')"
  # give both back
  for a in "$VGA" "$HDA"; do
    [ -e "$PCI/$a/driver" ] || { bw /sys/bus/pci/drivers_probe "$a" 20; }
  done
  eq "facts: after the holder is gone drivers_probe gives back bochs-drm + snd_hda_intel" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
fi
[ "$(drv "$VGA") $(drv "$HDA")" = "bochs-drm snd_hda_intel" ] || raw_reattach "$VGA" "$HDA"

# --- 3c. a process holds /dev/dri/card0 while bochs-drm is unbound
CARD=$(ls "$PCI/$VGA/drm" | grep -m1 '^card')
sleep 1000 < "/dev/dri/$CARD" &
DRM_PID=$!
sleep 0.3
t=$(now_us); unbind_bg "$VGA" /tmp/unbind-drm.out
if wait_for "gone $UNBIND_PID" 100; then
  fact drm-held-unbind "unbind of bochs-drm while pid $DRM_PID holds /dev/dri/$CARD: returned ($(cat /tmp/unbind-drm.out)) in $(ms_since "$t") ms; /dev/dri now: $(ls /dev/dri | tr '\n' ' ')"
else
  fact drm-held-unbind "unbind of bochs-drm while /dev/dri/$CARD is held: still blocked after 10 s"
fi
kill "$DRM_PID"; wait "$DRM_PID" 2>/dev/null
wait_for "gone $UNBIND_PID" 100
bw /sys/bus/pci/drivers_probe "$VGA" 20
fact drm-rebind "after the holder exits, drivers_probe -> $(drv "$VGA"), drm dir: $(ls "$PCI/$VGA/drm" 2>/dev/null | tr '\n' ' '), /dev/dri: $(ls /dev/dri | tr '\n' ' ')"
eq "facts: VGA back on bochs-drm after the DRM-holder test" "$(drv "$VGA")" bochs-drm
