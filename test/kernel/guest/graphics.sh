# Issue 14's graphics half on the real kernel (sourced by test.sh, INSIDE the
# guest): the consoles on the boot VGA (bochs-drm with fbcon), the firmware
# frame buffer, and on-busy = "release" against a stand-in compositor. The
# project's code runs through graphics.mjs (dist/lib/host, the lifecycle).
GFXRUN=$(mktemp -d)
export GFXRUN

# --- vtconsole: unbind from fbcon, read back, bind again, read back
node "$G/graphics.mjs" console > /tmp/gfx-console.out 2>&1
note "graphics console: $(head -c 500 /tmp/gfx-console.out | tr '\n' ' ')"
IFS='|' read -r c_ok c_list c_before c_during c_after < /tmp/gfx-console.out
eq "graphics: the host change unbinds the frame-buffer console(s) and binds them back" "$c_ok" ok
check "graphics: a console was bound to fbcon on the boot VGA before (${c_list:-none})" test -n "$c_list"
for c in $(echo "$c_list" | tr ',' ' '); do
  check "graphics: $c reads bind=0 while unbound" sh -c "echo '$c_during' | tr ',' '\n' | grep -qx '$c=0'"
  check "graphics: $c reads bind=1 after the undo" sh -c "echo '$c_after' | tr ',' '\n' | grep -qx '$c=1'"
done
eq "graphics: every console is as it was after the undo" "$c_after" "$c_before"
fact vtconsole-unbind "before $c_before; unbound $c_during; after $c_after"

# --- firmware frame buffer: a SeaBIOS guest has no efifb/simplefb to unbind
node "$G/graphics.mjs" framebuffer > /tmp/gfx-fb.out 2>&1
IFS='|' read -r f_ok f_count f_text < /tmp/gfx-fb.out
eq "graphics: the frame buffer plan reads the platform drivers" "$f_ok" ok
if [ "${f_count:-0}" = 0 ]; then
  note "SKIPPED graphics: firmware frame buffer unbind/bind: this SeaBIOS guest has no efi-framebuffer, simple-framebuffer or vesa-framebuffer device bound ($(ls /sys/bus/platform/drivers 2>/dev/null | grep -E 'framebuffer' | tr '\n' ' ')); the sim tier covers the unbind, bind and rollback"
else
  note "graphics: $f_count firmware frame buffer(s) bound: $f_text (unbinding them here would take the console off; not exercised)"
fi

# --- on-busy = "release": a stand-in compositor lets go on the remove uevent
CARD=$(ls "$PCI/$VGA/drm" 2>/dev/null | grep -m1 '^card')
cat > /tmp/compositor.sh <<'SH'
#!/bin/sh
# Stands in for a compositor (it is not one): holds /dev/dri/$1 open, as a
# compositor holds its GPU, and lets go when the kernel sends a remove uevent
# for that node (busybox uevent reads the kernel's netlink socket), as
# wlroots and KWin do for a GPU they can give up. With "stubborn" it never does.
exec 3< "/dev/dri/$1"
if [ "$2" = stubborn ]; then exec sleep 100000; fi
uevent sh -c 'if [ "$ACTION" = remove ] && [ "$DEVNAME" = "dri/'"$1"'" ]; then echo "$ACTION $DEVNAME" > /tmp/compositor.saw; kill '$$' $PPID; fi' 3<&-
SH
chmod +x /tmp/compositor.sh
if [ -z "$CARD" ]; then
  notok "graphics: the guest VGA $VGA has a DRM card node"
else
  rm -f /tmp/compositor.saw
  /tmp/compositor.sh "$CARD" &
  COMP=$!
  wait_for "ls -l /proc/$COMP/fd 2>/dev/null | grep -q /dev/dri/$CARD" 100
  check "graphics: the stand-in compositor holds /dev/dri/$CARD" sh -c "ls -l /proc/$COMP/fd | grep -q /dev/dri/$CARD"
  node "$G/graphics.mjs" release "$VGA" 20000 > /tmp/gfx-rel.out 2>&1
  note "graphics release: $(head -c 600 /tmp/gfx-rel.out | tr '\n' ' ')"
  check "graphics: on-busy release prepares and releases the VM" grep -q '^ok|' /tmp/gfx-rel.out
  eq "graphics: the stand-in compositor saw the remove uevent for its node" "$(cat /tmp/compositor.saw 2>/dev/null)" "remove dri/$CARD"
  check "graphics: the stand-in compositor let go" sh -c "! [ -d /proc/$COMP ]"
  eq "graphics: the pair is back on its drivers after the release" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
  kill "$COMP" 2>/dev/null; wait "$COMP" 2>/dev/null

  # refusal: a holder that does not let go is named, nothing changes
  CARD=$(ls "$PCI/$VGA/drm" 2>/dev/null | grep -m1 '^card')
  /tmp/compositor.sh "$CARD" stubborn &
  COMP=$!
  wait_for "ls -l /proc/$COMP/fd 2>/dev/null | grep -q /dev/dri/$CARD" 100
  node "$G/graphics.mjs" release "$VGA" 2000 > /tmp/gfx-ref.out 2>&1
  note "graphics refusal: $(head -c 600 /tmp/gfx-ref.out | tr '\n' ' ')"
  check "graphics: a holder that does not let go refuses the start (DeviceBusy)" grep -q '^refused|DeviceBusy|' /tmp/gfx-ref.out
  check "graphics: the refusal names the holder's pid and command" grep -q "'sleep' (pid $COMP)" /tmp/gfx-ref.out
  check "graphics: the refusal leaves no machine record" grep -q 'machines=0$' /tmp/gfx-ref.out
  eq "graphics: nothing changed: the pair is still on its drivers" "$(drv "$VGA") $(drv "$HDA")" "bochs-drm snd_hda_intel"
  check "graphics: the holder still holds its node" sh -c "ls -l /proc/$COMP/fd | grep -q /dev/dri/$CARD"
  kill "$COMP" 2>/dev/null; wait "$COMP" 2>/dev/null
fi
