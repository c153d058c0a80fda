/**
 * Shared by the benchmarks: timing runs, percentiles, and the report every
 * figure goes into (printed as it is measured, then written as JSON and the
 * README's SVG chart by test/bench/run.ts). A figure is printed next to its
 * anchor (what it is compared with, measured in the same run) and the ratio;
 * a goal, where the project has one, is printed beside it and never fails
 * the run: the machines are shared, so times are figures, not tests.
 */
import { performance } from 'node:perf_hooks';

/** Sorted copy's value at quantile `p` (0..1). */
export function quantile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** `p50 X ms, p99 Y ms, n=N` with `digits` decimals. */
export function stats(samples: readonly number[], digits = 1): string {
  return `p50 ${quantile(samples, 0.5).toFixed(digits)} ms, p99 ${quantile(samples, 0.99).toFixed(digits)} ms, n=${samples.length}`;
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

/** Run `a` and `b` alternately `n` times each, so a change of load hits both alike: their times in ms. */
export async function timePairs(n: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number[], number[]]> {
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < n; i++) {
    as.push(...(await timeRuns(1, a)));
    bs.push(...(await timeRuns(1, b)));
  }
  return [as, bs];
}

export interface Goal {
  /** `ratio`: the figure over its anchor; `value`: the figure itself, in its unit. */
  readonly on: 'ratio' | 'value';
  readonly max: number;
}

export interface Figure {
  readonly id: string;
  readonly label: string;
  /** The p50 for timings, the reading for memory. */
  readonly value: number;
  readonly unit: 'ms' | 'MiB' | 's';
  readonly samples?: readonly number[];
  readonly anchor?: { readonly label: string; readonly value: number; readonly samples?: readonly number[] };
  readonly goal?: Goal;
  /** What else to know to read it (conditions, what is left out). */
  readonly note?: string;
}

const fmt = (value: number, unit: string): string => `${value.toFixed(unit === 'MiB' || unit === 's' ? 1 : value < 10 ? 2 : 1)} ${unit}`;

export function ratioOf(f: Figure): number | null {
  return f.anchor && f.anchor.value > 0 ? f.value / f.anchor.value : null;
}

export function goalMet(f: Figure): boolean | null {
  if (!f.goal) return null;
  const x = f.goal.on === 'ratio' ? ratioOf(f) : f.value;
  return x === null ? null : x <= f.goal.max;
}

/** One line: figure, anchor, ratio, goal. */
export function describe(f: Figure): string {
  const p = f.samples ? ` (${f.samples.length} runs, p50; p99 ${fmt(quantile(f.samples, 0.99), f.unit)})` : '';
  let line = `${f.label}: ${fmt(f.value, f.unit)}${p}`;
  const ratio = ratioOf(f);
  if (f.anchor) line += `; anchor ${f.anchor.label}: ${fmt(f.anchor.value, f.unit)}; ratio ${ratio!.toFixed(2)}x`;
  if (f.goal) {
    const limit = f.goal.on === 'ratio' ? `ratio <= ${f.goal.max}x` : `<= ${f.goal.max} ${f.unit}`;
    line += `; goal ${limit}: ${goalMet(f) ? 'met' : 'NOT met'}`;
  }
  if (f.note) line += ` [${f.note}]`;
  return line;
}

export class Report {
  readonly figures: Figure[] = [];

  add(figure: Figure): void {
    this.figures.push(figure);
    console.log(`bench ${figure.id}: ${describe(figure)}`);
  }

  /** For the JSON file: samples kept only where the chart needs them. */
  toJSON(meta: Record<string, unknown>): unknown {
    return {
      ...meta,
      figures: this.figures.map((f) => ({
        ...f,
        ratio: ratioOf(f),
        goalMet: goalMet(f),
        samples: undefined,
        anchor: f.anchor ? { label: f.anchor.label, value: f.anchor.value } : undefined,
      })),
    };
  }
}
