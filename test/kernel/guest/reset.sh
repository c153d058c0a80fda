# Sourced by hugepages.sh INSIDE the guest: reset_method on the real kernel
# (lib/host/reset-method.ts from dist/). For every device with a reset_method
# file and each method it lists, the module writes that method alone: taken,
# it must read back and undo (twice) must restore the list; refused by the
# kernel, the file must read as before. A method a device does not list is
# refused before any write. What the kernel did is recorded as facts.
RS_DEVS=""
for p in "$PCI"/*; do
  if [ -r "$p/reset_method" ]; then
    fact "reset_method ${p##*/}" "$(cat "$p/reset_method")"
    RS_DEVS="$RS_DEVS ${p##*/}"
  fi
done
if [ -z "$RS_DEVS" ]; then
  note "SKIPPED reset-method: no guest device has a reset_method file"
else
  RS_DEVS=$RS_DEVS node --input-type=module -e '
    const d = "/repo/dist/lib";
    const { planResetMethod, undoResetMethod, RESET_METHODS } = await import(`${d}/host/reset-method.js`);
    const { DEFAULT_ROOTS } = await import(`${d}/roots.js`);
    const fs = await import("node:fs/promises");
    const context = { roots: DEFAULT_ROOTS, systemd: null };
    for (const a of process.env.RS_DEVS.trim().split(" ")) {
      const read = async () => (await fs.readFile(`/sys/bus/pci/devices/${a}/reset_method`, "utf8")).trim();
      const before = await read();
      for (const m of before.split(" ")) {
        const c = await planResetMethod({ address: a, resetMethod: m }, context);
        try {
          await c.apply();
          const got = await read();
          await undoResetMethod(c.record, context);
          const undone = await read();
          await undoResetMethod(c.record, context);
          console.log(`taken|${a}|${m}|${got}|${undone}|${await read()}|${before}`);
        } catch (e) {
          const after = await read();
          await undoResetMethod(c.record, context);
          console.log(`refused|${a}|${m}|${after}|${await read()}|${before}|${e.message}`);
        }
      }
      const missing = RESET_METHODS.find((m) => !before.split(" ").includes(m));
      try { await planResetMethod({ address: a, resetMethod: missing }, context); console.log(`unlisted-planned|${a}|${missing}`); }
      catch (e) { console.log(`unlisted|${a}|${missing}|${await read()}|${before}|${e.message}`); }
    }
  ' > /tmp/rs.out 2>&1
  note "reset-method: $(head -c 1500 /tmp/rs.out | tr '\n' '~')"
  rs_taken=0 rs_bad=0
  while IFS='|' read -r kind a m x y z w rest; do
    case $kind in
      taken)
        rs_taken=$((rs_taken + 1))
        eq "reset-method: '$m' alone written and read back on $a, undo restores '$w' (twice)" "$x|$y|$z" "$m|$w|$w" ;;
      refused)
        fact reset-method-stale "$a lists '$z' but the kernel refuses '$m' alone: $w"
        eq "reset-method: the kernel's refusal of '$m' on $a changed nothing, and undo leaves it" "$x|$y" "$z|$z" ;;
      unlisted)
        case "$z" in
          "Invalid reset-method '$m' for '$a': the kernel offers '$y' for it"*) ok "reset-method: '$m' (not listed for $a) is refused before any write, naming what is" ;;
          *) notok "reset-method: '$m' (not listed for $a) is refused before any write, naming what is (said: $z)" ;;
        esac
        eq "reset-method: and $a reads as it did" "$x" "$y" ;;
      *) rs_bad=$((rs_bad + 1)) ;;
    esac
  done < /tmp/rs.out
  check "reset-method: at least one method was written and restored on the real kernel ($rs_taken)" test "$rs_taken" -gt 0
  eq "reset-method: the driver script ran to the end (no other output)" "$rs_bad" 0
fi
