#!/bin/sh
# ExecStopPost of vfio-system-test.service (INSIDE the guest): after the steps
# ended, or were killed at the service's TimeoutStartSec, say so and save the
# journal of this boot to the results share, and power the guest off at once
# (the results share is written through: nothing is lost).
R=/results
# The steps asked for a real poweroff (with a VM running): vfio-system-late.service
# saves the journal at the end of it; nothing to do here.
if [ -e $R/poweroff-requested ] && grep -q '^# guest-done' $R/tap 2>/dev/null; then exit 0; fi
if ! grep -q '^# guest-done' $R/tap 2>/dev/null; then
  step=$(cat $R/step 2>/dev/null || echo "? (none started)")
  echo "not ok - timed out in step $step: the steps' budget (TimeoutStartSec) ran out (service result '$SERVICE_RESULT')" >> $R/tap
  echo "# guest-done rc=1" >> $R/tap
fi
timeout 30 journalctl -b --no-pager -o short-monotonic > $R/journal.txt 2>&1
timeout 20 journalctl -b -u vfio-hookd --no-pager -o verbose > $R/journal-vfio-hookd.txt 2>&1
[ -d /var/cache/libvirt/qemu/capabilities ] && cp -a /var/cache/libvirt/qemu/capabilities $R/libvirt-caps
dmesg > $R/dmesg.txt 2>/dev/null
sync
echo 1 > /proc/sys/kernel/sysrq
echo o > /proc/sysrq-trigger
