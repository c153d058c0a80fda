# Issue 14 against the real systemd (PID 1 of the system tier's guest), sourced
# by test.sh after step 4, INSIDE the guest (the last step: host-cpus, hugepages
# and reset-method through the daemon). single-gpu = true stops a stand-in
# display manager and on-busy = "stop-units" a stand-in for
# nvidia-persistenced that holds the guest GPU's DRM node, through the
# installed daemon's StopUnit/JobRemoved; release starts exactly what was
# running; a refused prepare starts them again and changes nothing.
step "single-gpu and on-busy = stop-units against the real systemd"
# systemctl reload returns once the daemon's Reload() has put the new file in force (ExecReload calls it over
# the bus): a VM the new configuration adds is in the hook's index when systemctl returns, with no wait.
reload_for() {
  bounded 60 systemctl reload vfio-hookd.service
  [ "$BRC" -eq 0 ] || return 0
  grep -qxF "vm $1" /run/vfio-hookd/owed || BRC="not in the hook's index when systemctl reload returned"
}
UVM=systest-units
SD=/run/vfio-standin
mkdir -p $SD
cat > $SD/display-manager.sh <<'SH'
#!/bin/sh
echo "stand-in display manager (vfio-hookd system tier): it says it is one, it draws nothing"
exec sleep 100000
SH
cat > $SD/persistenced.sh <<SH
#!/bin/sh
# Stands in for nvidia-persistenced: holds the guest GPU's DRM node while it runs.
c=\$(ls $PCI/$VGA/drm | grep -m1 '^card')
echo "stand-in persistenced: holding /dev/dri/\$c"
exec sleep 100000 < /dev/dri/\$c
SH
chmod +x $SD/*.sh
cat > /etc/systemd/system/standin-dm.service <<UNIT
[Unit]
Description=Stand-in display manager (vfio-hookd system tier; not a display manager)
[Service]
ExecStart=$SD/display-manager.sh
[Install]
Alias=display-manager.service
UNIT
cat > /etc/systemd/system/standin-persistenced.service <<UNIT
[Unit]
Description=Stand-in for nvidia-persistenced holding the guest GPU's DRM node (vfio-hookd system tier)
[Service]
ExecStart=$SD/persistenced.sh
UNIT
cat > /etc/systemd/system/standin-idle.service <<UNIT
[Unit]
Description=A unit named in stop-units that is not running (vfio-hookd system tier)
[Service]
ExecStart=/bin/sleep 100000
UNIT
bounded 60 systemctl daemon-reload
bounded 60 systemctl enable --now standin-dm.service > /dev/null 2>&1
bounded 60 systemctl start standin-persistenced.service
eq "the stand-ins run: display-manager.service (alias) and standin-persistenced" \
  "$(systemctl is-active display-manager.service) $(systemctl is-active standin-persistenced.service) $(systemctl is-active standin-idle.service)" \
  "active active inactive"
ucard=$(ls "$PCI/$VGA/drm" | grep -m1 '^card')
vt_before=$(for c in /sys/class/vtconsole/*; do printf '%s=%s ' "${c##*/}" "$(cat "$c/bind")"; done)

cp /etc/vfio-hookd/vfio-hookd.toml /tmp/vfio-hookd.toml.saved
cat > /etc/vfio-hookd/vfio-hookd.toml <<TOML
[daemon]
write-timeout = "60s"

[vm.$UVM]
devices = ["$VGA"]
single-gpu = true
on-busy = "stop-units"
stop-units = ["standin-persistenced.service", "standin-idle.service"]
TOML
reload_for "$UVM"
eq "systemctl reload returns with $UVM in the hook's index (no wait)" "$BRC" 0
cat > /tmp/units-domain.xml <<XML
<domain type='qemu'><name>$UVM</name><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>
XML
uhook() {
  bounded $HOOKCALL env -i LC_ALL=C PATH=/usr/sbin:/usr/bin HOME=/root USER=root LOGNAME=root \
    "$HOOK" "$UVM" "$1" "$2" "$3" < /tmp/units-domain.xml > /tmp/uhook.out 2> /tmp/uhook.err
}

uhook prepare begin -
eq "prepare of $UVM exits 0" "$BRC" 0
[ $BRC -eq 0 ] || note "hook stderr: $(head -c 500 /tmp/uhook.err | tr '\n' ' ')"
eq "prepare stopped the display manager and the holder, not the idle unit" \
  "$(systemctl is-active display-manager.service) $(systemctl is-active standin-persistenced.service) $(systemctl is-active standin-idle.service)" \
  "inactive inactive inactive"
eq "prepare moved the pair to vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
vt_during=$(for c in /sys/class/vtconsole/*; do printf '%s=%s ' "${c##*/}" "$(cat "$c/bind")"; done)
note "consoles before: $vt_before; while prepared: $vt_during"
fbcons=$(for c in /sys/class/vtconsole/*; do grep -qi 'frame buffer' "$c/name" && printf '%s ' "${c##*/}"; done)
if echo "$vt_before" | grep -Eq "($(echo $fbcons | tr ' ' '|'))=1"; then
  still=$(for c in $fbcons; do [ "$(cat /sys/class/vtconsole/$c/bind)" = 1 ] && printf '%s ' "$c"; done)
  eq "prepare unbound the frame-buffer console(s) ($fbcons)" "$still" ""
else
  note "SKIPPED the console half here: no frame-buffer console was bound ($vt_before); the kernel tier checks it"
fi
uhook release end shutdown
eq "release of $UVM exits 0" "$BRC" 0
[ $BRC -eq 0 ] || note "hook stderr: $(head -c 500 /tmp/uhook.err | tr '\n' ' ')"
eq "release gave the pair back" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
eq "release started the display manager and the holder again, and not the idle unit" \
  "$(systemctl is-active display-manager.service) $(systemctl is-active standin-persistenced.service) $(systemctl is-active standin-idle.service)" \
  "active active inactive"
vt_after=$(for c in /sys/class/vtconsole/*; do printf '%s=%s ' "${c##*/}" "$(cat "$c/bind")"; done)
eq "the consoles are bound as before" "$vt_after" "$vt_before"
bounded 30 journalctl -u vfio-hookd.service -b -o export VFIO_DOMAIN=$UVM > /tmp/ujournal.export 2>/dev/null
n=$(grep -c '^VFIO_HOST_CHANGE=' /tmp/ujournal.export)
if [ "$n" -ge 4 ]; then ok "the journal has an entry per host change made and undone ($n with VFIO_HOST_CHANGE)"; else notok "the journal has an entry per host change made and undone (got $n)"; fi

# rollback: a holder no unit runs keeps the card; the prepare is refused and everything comes back
ucard=$(ls "$PCI/$VGA/drm" | grep -m1 '^card')
sleep 600 < "/dev/dri/$ucard" &
uholder=$!
uhook prepare begin -
eq "prepare with a stray holder exits 1" "$BRC" 1
case "$(head -n 1 /tmp/uhook.err)" in
  "vfio-hookd: "*"$uholder"*) ok "its refusal names the stray holder's pid $uholder" ;;
  *) notok "its refusal names the stray holder's pid $uholder (got '$(head -c 300 /tmp/uhook.err)')" ;;
esac
eq "the refusal started the display manager and the holder again" \
  "$(systemctl is-active display-manager.service) $(systemctl is-active standin-persistenced.service) $(systemctl is-active standin-idle.service)" \
  "active active inactive"
eq "the refusal left the pair on its drivers" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
vt_after=$(for c in /sys/class/vtconsole/*; do printf '%s=%s ' "${c##*/}" "$(cat "$c/bind")"; done)
eq "the refusal left the consoles bound as before" "$vt_after" "$vt_before"
kill $uholder 2>/dev/null; wait $uholder 2>/dev/null
uhook stopped end -
uhook release end failed
eq "the follow-up release of the refused $UVM exits 0" "$BRC" 0

# put the guest back for the next steps
bounded 60 systemctl disable --now standin-dm.service > /dev/null 2>&1
bounded 60 systemctl stop standin-persistenced.service
rm -f /etc/systemd/system/standin-dm.service /etc/systemd/system/standin-persistenced.service /etc/systemd/system/standin-idle.service
bounded 60 systemctl daemon-reload
cp /tmp/vfio-hookd.toml.saved /etc/vfio-hookd/vfio-hookd.toml
bounded 60 systemctl reload vfio-hookd.service
eq "the first configuration is back" "$BRC" 0

# ---- host tuning through the installed daemon: host-cpus against this systemd, hugepages and
# reset-method on this kernel, planned by the lifecycle from the configuration, undone at release.
step "host-cpus, hugepages and reset-method through the daemon"
TVM=systest-tuning
hp=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
tshow() { printf 'cpus=%s hp=%s rm=%s drv=%s' "$(cpus_show)" "$(cat $hp 2>/dev/null)" "$(cat "$PCI/$TRM/reset_method" 2>/dev/null)" "$(drv "$VGA") $(drv "$HDA")"; }
# A device with two methods or more gets its first one alone (a lone 'bus' on a shared bus is refused by 6.12, see
# the kernel tier's fact reset-method-stale); without one, the reset-method half is SKIPPED.
TRM= TRMWANT=
for a in "$VGA" "$HDA"; do
  ms=$(cat "$PCI/$a/reset_method" 2>/dev/null)
  if [ "$(echo $ms | wc -w)" -ge 2 ]; then TRM=$a TRMWANT=${ms%% *}; break; fi
done
online=$(cat /sys/devices/system/cpu/online)
{
  printf '[daemon]\nwrite-timeout = "60s"\n\n[vm.%s]\ndevices = ["%s", "%s"]\nhugepages = "16M"\n' "$TVM" "$VGA" "$HDA"
  if [ "$online" != 0 ]; then printf 'host-cpus = "0"\n'; fi
  if [ -n "$TRM" ]; then printf 'reset-method = { "%s" = "%s" }\n' "$TRM" "$TRMWANT"; fi
} > /etc/vfio-hookd/vfio-hookd.toml
if [ "$online" = 0 ]; then note "SKIPPED host-cpus through the daemon: the guest has one CPU"; fi
if [ -z "$TRM" ]; then note "SKIPPED reset-method through the daemon: no guest device offers two reset methods"; fi
reload_for "$TVM"
eq "systemctl reload returns with $TVM in the hook's index (no wait)" "$BRC" 0
TRM=${TRM:-$VGA}
before=$(tshow)
note "tuning before: $before"
sed "s/$UVM/$TVM/" /tmp/units-domain.xml > /tmp/tuning-domain.xml
thook() {
  bounded $HOOKCALL env -i LC_ALL=C PATH=/usr/sbin:/usr/bin HOME=/root USER=root LOGNAME=root \
    "$HOOK" "$TVM" "$1" "$2" "$3" < /tmp/tuning-domain.xml > /tmp/thook.out 2> /tmp/thook.err
}
thook prepare begin -
eq "prepare of $TVM exits 0" "$BRC" 0
[ $BRC -eq 0 ] || note "hook stderr: $(head -c 500 /tmp/thook.err | tr '\n' ' ')"
during=$(tshow)
note "tuning while prepared: $during"
hp_before=$(echo "$before" | sed 's/.* hp=\([0-9]*\) .*/\1/')
eq "prepare reserved 8 more 2 MiB hugepages on this kernel" "$(cat $hp)" "$((hp_before + 8))"
if [ "$online" != 0 ]; then eq "prepare set AllowedCPUs=0 on system.slice, user.slice, init.scope through this systemd" "$(cpus_show)" "0/0/0/"; fi
if [ -n "$TRMWANT" ]; then eq "prepare wrote reset_method of $TRM before the detach" "$(cat "$PCI/$TRM/reset_method")" "$TRMWANT"; fi
eq "prepare moved the pair to vfio-pci" "$(drv "$VGA") $(drv "$HDA")" "vfio-pci vfio-pci"
thook release end shutdown
eq "release of $TVM exits 0" "$BRC" 0
[ $BRC -eq 0 ] || note "hook stderr: $(head -c 500 /tmp/thook.err | tr '\n' ' ')"
eq "release put AllowedCPUs, hugepages, reset_method and drivers back as they were" "$(tshow)" "$before"
# refusal: a reset method the VGA does not offer, planned after the hugepages were reserved: the
# lifecycle gives them back, and nothing else was changed
vgam=" $(cat "$PCI/$VGA/reset_method" 2>/dev/null) "
nope=; for m in flr pm acpi device_specific bus; do case "$vgam" in *" $m "*) ;; *) nope=$m; break ;; esac; done
sed -i '/^reset-method = /d' /etc/vfio-hookd/vfio-hookd.toml
printf 'reset-method = { "%s" = "%s" }\n' "$VGA" "$nope" >> /etc/vfio-hookd/vfio-hookd.toml
bounded 60 systemctl reload vfio-hookd.service
thook prepare begin -
eq "prepare with reset-method '$nope', which $VGA does not offer, exits 1" "$BRC" 1
case "$(head -n 1 /tmp/thook.err)" in
  *"for '$VGA': the kernel offers"*) ok "its refusal names what the device offers" ;;
  *) notok "its refusal names what the device offers (got '$(head -c 300 /tmp/thook.err)')" ;;
esac
eq "the refusal gave the hugepages back and left AllowedCPUs, reset_method and drivers as they were" "$(tshow)" "$before"
thook release end failed
cp /tmp/vfio-hookd.toml.saved /etc/vfio-hookd/vfio-hookd.toml
bounded 60 systemctl reload vfio-hookd.service
eq "the first configuration is back after the tuning step" "$BRC" 0
