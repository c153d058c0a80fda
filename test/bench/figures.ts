/** Shared by the benchmarks: timing runs and printing percentiles. */
import { performance } from 'node:perf_hooks';

/** `p50 X ms, p99 Y ms, n=N` with `digits` decimals. */
export function stats(samples: readonly number[], digits = 1): string {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  return `p50 ${at(0.5).toFixed(digits)} ms, p99 ${at(0.99).toFixed(digits)} ms, n=${samples.length}`;
}

/** Run `fn` `n` times, one after another; the time of each run in ms. */
export async function timeRuns(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}
