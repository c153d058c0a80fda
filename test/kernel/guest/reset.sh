# Sourced by hugepages.sh INSIDE the guest: reset_method on the real kernel.
# Every device's reset_method is listed (a fact); on the first device that has
# one, lib/host/reset-method.ts writes its last method alone, the file reads
# that back, undo restores the list; a method it does not offer is refused
# before any write. The raw kernel's answer to an unoffered method is a fact.
RS_DEV=""
for p in "$PCI"/*; do
  a=${p##*/}
  if [ -r "$p/reset_method" ]; then
    fact "reset_method $a" "$(cat "$p/reset_method")"
    [ -z "$RS_DEV" ] && [ "$(drv "$a")" != e1000e ] && RS_DEV=$a
  fi
done
if [ -z "$RS_DEV" ]; then
  note "SKIPPED reset-method: no guest device has a reset_method file"
else
  rs_before=$(cat "$PCI/$RS_DEV/reset_method")
  rs_last=${rs_before##* }
  rs_missing=""
  for m in flr bus pm acpi af_flr device_specific; do
    case " $rs_before " in *" $m "*) ;; *) rs_missing=$m; break ;; esac
  done
  RS_DEV=$RS_DEV RS_LAST=$rs_last RS_MISSING=$rs_missing node --input-type=module -e '
    const d = "/repo/dist/lib";
    const { planResetMethod, undoResetMethod } = await import(`${d}/host/reset-method.js`);
    const { DEFAULT_ROOTS } = await import(`${d}/roots.js`);
    const fs = await import("node:fs/promises");
    const a = process.env.RS_DEV;
    const read = async () => (await fs.readFile(`/sys/bus/pci/devices/${a}/reset_method`, "utf8")).trim();
    const context = { roots: DEFAULT_ROOTS, systemd: null };
    const c = await planResetMethod({ address: a, resetMethod: process.env.RS_LAST }, context);
    await c.apply();
    console.log(`applied=${await read()}`);
    await undoResetMethod(c.record, context);
    console.log(`undone=${await read()}`);
    await undoResetMethod(c.record, context);
    console.log(`undone-twice=${await read()}`);
    if (process.env.RS_MISSING) {
      try { await planResetMethod({ address: a, resetMethod: process.env.RS_MISSING }, context); console.log("missing=planned"); }
      catch (e) { console.log(`missing-error=${e.name}: ${e.message}`); }
      console.log(`missing-after=${await read()}`);
    }
  ' > /tmp/rs.out 2>&1
  note "reset-method on $RS_DEV ($rs_before): $(head -c 700 /tmp/rs.out | tr '\n' '|')"
  rsv() { sed -n "s/^$1=//p" /tmp/rs.out; }
  eq "reset-method: '$rs_last' written and read back on $RS_DEV" "$(rsv applied)" "$rs_last"
  eq "reset-method: undo restores '$rs_before'" "$(rsv undone)" "$rs_before"
  eq "reset-method: a second undo changes nothing" "$(rsv undone-twice)" "$rs_before"
  if [ -n "$rs_missing" ]; then
    check "reset-method: '$rs_missing' (not offered) is refused naming what is" grep -q "^missing-error=InvalidConfig: Invalid reset-method '$rs_missing' for '$RS_DEV': the kernel offers '$rs_before' for it" /tmp/rs.out
    eq "reset-method: the refusal changed nothing" "$(rsv missing-after)" "$rs_before"
    bw "$PCI/$RS_DEV/reset_method" "$rs_missing"
    fact reset-method-unoffered "writing '$rs_missing' to reset_method of $RS_DEV ($rs_before): rc $BW_RC $BW_MSG, reads '$(cat "$PCI/$RS_DEV/reset_method")'"
    [ "$(cat "$PCI/$RS_DEV/reset_method")" = "$rs_before" ] || echo "$rs_before" > "$PCI/$RS_DEV/reset_method"
  fi
  bw "$PCI/$RS_DEV/reset_method" default
  fact reset-method-default "writing 'default' to reset_method of $RS_DEV: rc $BW_RC, reads '$(cat "$PCI/$RS_DEV/reset_method")'"
  eq "reset-method: the device ends with its methods as found" "$(cat "$PCI/$RS_DEV/reset_method")" "$rs_before"
fi
