# Sourced by test.sh INSIDE the system tier's guest (systemd is PID 1):
# lib/host/cpu-isolation.ts from dist/ against the real systemd. A tiny local
# SystemdManager adapter over busctl stands in for A's (lib/host/systemd-manager.ts):
# it only forwards SetUnitProperties and Get, so what is tested is systemd's
# answer. Plan and apply run in one node process, undo in another from the
# record alone (as recovery would), twice; then a refused plan changes nothing.
CG=/sys/fs/cgroup
# one unit at a time: with several units, systemctl show puts a blank line between them
cpus_show() { for u in system.slice user.slice init.scope; do printf '%s/' "$(systemctl show -p AllowedCPUs --value "$u")"; done; }
# cpuset.cpus per unit; 'all' for no restriction: an empty file (inherit the parent's) or none
# (systemd has not enabled the cpuset controller there, or disabled it again when nothing needs it).
cpus_cg() {
  for u in system.slice user.slice init.scope; do
    v=$(cat "$CG/$u/cpuset.cpus" 2>/dev/null); printf '%s=%s/' "$u" "${v:-all}"
  done
}
# systemd realizes the cgroup after the method has replied, on its own event loop;
# no event tells a client when cpuset.cpus is written, so this polls, bounded.
cpus_wait() { # WANT SECS
  cw=0; while [ "$(cpus_cg)" != "$1" ] && [ $cw -lt $(( $2 * 5 )) ]; do sleep 0.2; cw=$((cw + 1)); done
  [ "$(cpus_cg)" = "$1" ]
}
cat > /tmp/cpus-adapter.mjs <<'JS'
// SystemdManager (lib/host/host-change.ts) over busctl, for this test only.
import { execFileSync } from 'node:child_process';
const bus = (...args) => execFileSync('busctl', ['--system', '--json=short', ...args], { encoding: 'utf8' });
const M = ['org.freedesktop.systemd1', '/org/freedesktop/systemd1', 'org.freedesktop.systemd1.Manager'];
export const systemd = {
  startUnit() { throw new Error('not in this test'); },
  stopUnit() { throw new Error('not in this test'); },
  activeState() { throw new Error('not in this test'); },
  async setRuntimeProperty(name, property, signature, value) {
    if (signature !== 'ay') throw new Error(`only ay here, not ${signature}`);
    execFileSync('busctl', ['--system', 'call', ...M, 'SetUnitProperties', 'sba(sv)', name, 'true', '1', property, 'ay', String(value.length), ...[...value].map(String)]);
  },
  async unitProperty(name, iface, property) {
    const path = JSON.parse(bus('call', ...M, 'LoadUnit', 's', name)).data[0];
    return JSON.parse(bus('get-property', 'org.freedesktop.systemd1', path, iface, property)).data;
  },
};
JS
online=$(cat /sys/devices/system/cpu/online)
if [ "$online" = 0 ]; then
  note "SKIPPED cpu isolation: the guest has one CPU (AllowedCPUs needs two: see -smp in run.sh)"
else
  cpus_before=$(cpus_show) cg_before=$(cpus_cg)
  note "cpus: online $online; AllowedCPUs before $cpus_before; cpuset.cpus $cg_before"
  bounded $NODE node --input-type=module -e '
    const { planCpuIsolation } = await import("/repo/dist/lib/host/cpu-isolation.js");
    const { DEFAULT_ROOTS } = await import("/repo/dist/lib/roots.js");
    const { systemd } = await import("/tmp/cpus-adapter.mjs");
    const fs = await import("node:fs");
    const change = await planCpuIsolation({ hostCpus: "0" }, { roots: DEFAULT_ROOTS, systemd });
    fs.writeFileSync("/tmp/cpus-record.json", JSON.stringify(change.record));
    console.log(`describe=${change.describe}`);
    await change.apply();
    console.log("applied");
  ' > /tmp/cpus.out 2>&1
  note "cpus apply: $(head -c 600 /tmp/cpus.out | tr '\n' '|'); record $(head -c 400 /tmp/cpus-record.json)"
  eq "cpus: systemd reads AllowedCPUs=0 for system.slice, user.slice, init.scope" "$(cpus_show)" "0/0/0/"
  cpus_wait "system.slice=0/user.slice=0/init.scope=0/" 30
  eq "cpus: the kernel's cpuset.cpus of the three cgroups says 0" "$(cpus_cg)" "system.slice=0/user.slice=0/init.scope=0/"
  eq "cpus: a process of system.slice may run on CPU 0 only" "$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/"$(systemctl show -p MainPID --value systemd-journald.service)"/status)" 0
  bounded $NODE node --input-type=module -e '
    const { undoCpuIsolation } = await import("/repo/dist/lib/host/cpu-isolation.js");
    const { DEFAULT_ROOTS } = await import("/repo/dist/lib/roots.js");
    const { systemd } = await import("/tmp/cpus-adapter.mjs");
    const record = JSON.parse((await import("node:fs")).readFileSync("/tmp/cpus-record.json", "utf8"));
    await undoCpuIsolation(record, { roots: DEFAULT_ROOTS, systemd });
    await undoCpuIsolation(record, { roots: DEFAULT_ROOTS, systemd });
    console.log("undone twice");
  ' > /tmp/cpus-undo.out 2>&1
  note "cpus undo: $(head -c 400 /tmp/cpus-undo.out | tr '\n' '|')"
  eq "cpus: undo from the record (another process, twice) puts AllowedCPUs back" "$(cpus_show)" "$cpus_before"
  cpus_wait "$cg_before" 30
  eq "cpus: and cpuset.cpus as it was" "$(cpus_cg)" "$cg_before"
  eq "cpus: journald may run on every CPU again" "$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/"$(systemctl show -p MainPID --value systemd-journald.service)"/status)" "$online"
  bounded $NODE node --input-type=module -e '
    const { planCpuIsolation } = await import("/repo/dist/lib/host/cpu-isolation.js");
    const { DEFAULT_ROOTS } = await import("/repo/dist/lib/roots.js");
    const { systemd } = await import("/tmp/cpus-adapter.mjs");
    try { await planCpuIsolation({ hostCpus: "0-3" }, { roots: DEFAULT_ROOTS, systemd }); console.log("planned"); }
    catch (e) { console.log(`${e.name}: ${e.message}`); }
  ' > /tmp/cpus-refused.out 2>&1
  eq "cpus: CPUs the guest does not have are refused, naming those it has" "$(cat /tmp/cpus-refused.out)" \
    "InvalidConfig: Invalid host-cpus '0-3': CPU 2-3 is not online (the host has $online); list only CPUs the host has, refusing"
  eq "cpus: the refusal changed nothing" "$(cpus_show)" "$cpus_before"
fi
