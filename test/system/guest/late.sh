#!/bin/sh
# ExecStop of vfio-system-late.service (INSIDE the guest), run at shutdown
# after vfio-hookd, libvirtd and the VMs have stopped: when the steps asked for
# the poweroff, record the pair's drivers now and save the journal of this boot
# (run.sh checks both after QEMU has exited).
R=/results
[ -e $R/poweroff-requested ] || exit 0
PCI=/sys/bus/pci/devices
drv() { l=$(readlink "$PCI/$1/driver" 2>/dev/null) && echo "${l##*/}" || echo none; }
read -r vga hda < $R/pair
echo "$(drv "$vga") $(drv "$hda")" > $R/shutdown-drivers.txt
echo "vfio-hookd: $(systemctl is-active vfio-hookd.service) libvirtd: $(systemctl is-active libvirtd.service)" >> $R/shutdown-drivers.txt
timeout 30 journalctl -b --no-pager -o short-monotonic > $R/journal.txt 2>&1
timeout 20 journalctl -b -u vfio-hookd --no-pager -o verbose > $R/journal-vfio-hookd.txt 2>&1
timeout 20 journalctl -b --no-pager -o export _SYSTEMD_UNIT=vfio-hookd.service + SYSLOG_IDENTIFIER=systemd > $R/shutdown-journal.export 2>&1
[ -d /var/cache/libvirt/qemu/capabilities ] && cp -a /var/cache/libvirt/qemu/capabilities $R/libvirt-caps
dmesg > $R/dmesg.txt 2>/dev/null
sync
