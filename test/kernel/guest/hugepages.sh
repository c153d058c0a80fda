# Sourced by test.sh INSIDE the guest (busybox ash): issue 14's host tuning on
# the real 6.12 kernel. Hugepages (lib/host/hugepages.ts from dist/): a 64-page
# reservation made, read back and given back; a request the guest's 1 GiB
# cannot meet refused with the numbers and the count put back. Then reset.sh:
# reset_method read, written and restored (lib/host/reset-method.ts).
# kvmfr is not here: it is an out-of-tree module this kernel cannot load.
note "SKIPPED kvmfr: Looking Glass's kvmfr is an out-of-tree module, not built for this kernel; lib/shm/kvmfr.ts is tested in test/sim/kvmfr.test.ts"
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
if [ ! -e "$HP/nr_hugepages" ]; then
  note "SKIPPED hugepages: this kernel has no 2 MiB hugepages ($HP is missing)"
else
  hp_before=$(cat "$HP/nr_hugepages")
  node --input-type=module -e '
    const d = "/repo/dist/lib";
    const { planHugepages, undoHugepages } = await import(`${d}/host/hugepages.js`);
    const { DEFAULT_ROOTS } = await import(`${d}/roots.js`);
    const fs = await import("node:fs/promises");
    const nr = async () => (await fs.readFile("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "utf8")).trim();
    const context = { roots: DEFAULT_ROOTS, systemd: null };
    const ok = await planHugepages({ total: "128M", pageSize: "2M" }, context);
    console.log(`describe=${ok.describe}`);
    await ok.apply();
    console.log(`applied=${await nr()}`);
    await undoHugepages(ok.record, context);
    console.log(`undone=${await nr()}`);
    await undoHugepages(ok.record, context);
    console.log(`undone-twice=${await nr()}`);
    const big = await planHugepages({ total: "2G", pageSize: "2M" }, context);
    try { await big.apply(); console.log("big=applied"); } catch (e) { console.log(`big-error=${e.name}: ${e.message}`); }
    console.log(`big-after=${await nr()}`);
    await undoHugepages(big.record, context);
    console.log(`big-undone=${await nr()}`);
  ' > /tmp/hp.out 2>&1
  note "hugepages: $(head -c 900 /tmp/hp.out | tr '\n' '|')"
  hpv() { sed -n "s/^$1=//p" /tmp/hp.out; }
  eq "hugepages: 64 2 MiB pages reserved and read back" "$(hpv applied)" "$((hp_before + 64))"
  eq "hugepages: undo gives them back" "$(hpv undone)" "$hp_before"
  eq "hugepages: a second undo changes nothing" "$(hpv undone-twice)" "$hp_before"
  check "hugepages: 2G (1024 pages) in a 1 GiB guest is refused with the numbers" \
    grep -q "^big-error=HostDependency: Cannot reserve hugepages: asked for 1024 2 MiB pages, the kernel gave [0-9]* (nr_hugepages $hp_before -> [0-9]*, [0-9]* free, put back to $hp_before): memory is fragmented" /tmp/hp.out
  eq "hugepages: the count is put back after the refusal" "$(hpv big-after)" "$hp_before"
  eq "hugepages: and undo after the refusal leaves it" "$(hpv big-undone)" "$hp_before"
  eq "hugepages: the pool file reads what it did before" "$(cat "$HP/nr_hugepages")" "$hp_before"
  fact hugepages-short "$(sed -n 's/^big-error=.*the kernel gave \([0-9]*\) .*/asked 1024 2 MiB pages in a 1 GiB guest, the kernel gave \1/p' /tmp/hp.out)"
fi
. "$G/reset.sh"
