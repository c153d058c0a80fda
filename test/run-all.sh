#!/usr/bin/env bash
# Runs every test tier that exists, in order, then the benchmarks, and ends
# with one line: "N passed, N failed" over all tiers (what CI reads).
#
# Each tier reports TAP; we count its "# pass" / "# fail" lines. A tier that
# crashes without a TAP summary counts as one failure, so a broken harness can
# never look green. Benchmarks print figures and never fail on a time.
set -u
cd "$(dirname "$0")/.."

total_pass=0
total_fail=0
summary=()

# count TIER LOGFILE EXIT_CODE
count() {
  local tier=$1 log=$2 rc=$3 pass fail
  pass=$(awk '/^# pass /{p+=$3} END{print p+0}' "$log")
  fail=$(awk '/^# fail /{f+=$3} END{print f+0}' "$log")
  if ! grep -q '^# pass ' "$log"; then
    echo "tier $tier: exited $rc without a passing TAP summary; counting one failure" >&2
    fail=$((fail + 1))
  elif [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
    case $tier in
      # ava's TAP reporter does not say "Failed to exit": a worker kept alive
      # after its last test (a timer, a socket, a child) fails the run silently.
      unit | sim | bus | e2e) echo "tier $tier: ava exited $rc with every test passed: a worker failed to exit;" \
        "run \`npx ava test/$tier\` without --tap to see which; counting one failure" >&2 ;;
      *) echo "tier $tier: exited $rc with every test passed; counting one failure" >&2 ;;
    esac
    fail=$((fail + 1))
  fi
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  summary+=("$tier: $pass passed, $fail failed")
}

logdir=$(mktemp -d "${TMPDIR:-/tmp}/vfio-hookd-tests.XXXXXX")
trap 'rm -rf "$logdir"' EXIT

echo "== typecheck and build"
if npx tsc -p tsconfig.json && node scripts/bundle.mjs; then
  printf '# pass 1\n# fail 0\n' >"$logdir/typecheck"; rc=0
else
  printf '# pass 0\n# fail 1\n' >"$logdir/typecheck"; rc=1
fi
count typecheck "$logdir/typecheck" "$rc"

# Lint and format: ESLint (typescript-eslint, no floating promises, no import
# cycles) and Prettier, each one check.
echo "== lint"
lint_pass=0; lint_fail=0
if npx eslint .; then lint_pass=$((lint_pass + 1)); else lint_fail=$((lint_fail + 1)); fi
if npx prettier --check . >/dev/null; then lint_pass=$((lint_pass + 1)); else echo "prettier: files not formatted (npm run format):"; npx prettier --list-different .; lint_fail=$((lint_fail + 1)); fi
printf '# pass %d\n# fail %d\n' "$lint_pass" "$lint_fail" >"$logdir/lint"
count lint "$logdir/lint" "$lint_fail"

for tier in unit sim bus e2e; do
  if compgen -G "test/$tier/*.test.ts" >/dev/null; then
    echo "== tier $tier"
    npx ava --tap "test/$tier/**/*.test.ts" 2>&1 | tee "$logdir/$tier"
    count "$tier" "$logdir/$tier" "${PIPESTATUS[0]}"
  fi
done

# The NixOS packaging without nixpkgs (nix-bin): parses, the settings renderer, install.sh --layout.
if [ -x test/nix/run.sh ]; then
  echo "== tier nix"
  test/nix/run.sh 2>&1 | tee "$logdir/nix"
  count nix "$logdir/nix" "${PIPESTATUS[0]}"
fi

if [ -x test/kernel/run.sh ]; then
  echo "== tier kernel"
  test/kernel/run.sh 2>&1 | tee "$logdir/kernel"
  count kernel "$logdir/kernel" "${PIPESTATUS[0]}"
fi

# A second guest boot on the kernel tier's kernel: systemd as PID 1, install.sh, the hook.
if [ -x test/system/run.sh ]; then
  echo "== tier system"
  test/system/run.sh 2>&1 | tee "$logdir/system"
  count system "$logdir/system" "${PIPESTATUS[0]}"
fi

if [ -f test/bench/run.ts ]; then
  # Figures next to their anchors, then docs/bench/results.json and hook-latency.svg;
  # never fails on a time (npm run bench:long repeats the memory run over 2,000 lifecycles).
  echo "== bench (figures only, never fails on time)"
  node --import tsx test/bench/run.ts || echo "bench exited non-zero (not counted)"
fi

echo "== totals"
for line in "${summary[@]}"; do echo "  $line"; done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
