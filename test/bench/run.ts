/**
 * `npm run bench`: every figure next to its anchor and the ratio (and the
 * project's goal, which never fails the run), then the figures as JSON and
 * the hook latency chart the README shows:
 *   docs/bench/results.json, results.md (the README's table), hook-latency.svg
 * (VFIO_BENCH_OUT=DIR writes them elsewhere). Needs `npm run build` (the
 * bundles in dist/bin). The kernel tier prints its own pair of figures
 * (engine against raw sysfs writes in one guest run).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO } from '../helpers/private-bus.js';
import { latencySvg } from './chart.js';
import { daemonFigures } from './daemon.bench.js';
import { engineFigures } from './engine.bench.js';
import { goalMet, Report } from './figures.js';

const report = new Report();
const out = process.env['VFIO_BENCH_OUT'] ?? path.join(REPO, 'docs/bench');
const series = await daemonFigures(report);
await engineFigures(report);

const meta = {
  date: new Date().toISOString(),
  node: process.version,
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model ?? 'unknown',
  loadAverage: os.loadavg().map((l) => Number(l.toFixed(2))),
  lifecycles: Number(process.env['VFIO_BENCH_LIFECYCLES'] ?? '1000'),
};
await fs.mkdir(out, { recursive: true });
await fs.writeFile(path.join(out, 'results.json'), `${JSON.stringify(report.toJSON(meta), null, 2)}\n`);
const subtitle = `${meta.cpus} CPUs, load ${meta.loadAverage.join(' ')}, node ${meta.node}, ${meta.date.slice(0, 10)}; 300 runs each, round-robin`;
await fs.writeFile(
  path.join(out, 'hook-latency.svg'),
  latencySvg('Hook round trip (libvirt runs it: argv + XML on stdin)', series, subtitle),
);
const cell = (v: number, unit: string): string => `${v.toFixed(unit === 'ms' && v < 10 ? 2 : 1)} ${unit}`;
const rows = report.figures.map((f) => {
  const ratio = f.anchor ? `${(f.value / f.anchor.value).toFixed(2)}x` : '';
  const goal = f.goal
    ? `${f.goal.on === 'ratio' ? `<= ${f.goal.max}x` : `<= ${f.goal.max} ${f.unit}`}: ${goalMet(f) ? 'met' : '**not met**'}`
    : '';
  return `| ${f.label.replace(/</g, '&lt;')} | ${cell(f.value, f.unit)} | ${f.anchor ? `${f.anchor.label.replace(/</g, '&lt;')}: ${cell(f.anchor.value, f.unit)}` : ''} | ${ratio} | ${goal} |`;
});
await fs.writeFile(
  path.join(out, 'results.md'),
  `| figure (p50 for times) | value | anchor, same run | ratio | goal |\n|---|---|---|---|---|\n${rows.join('\n')}\n\n${subtitle}\n`,
);
const missed = report.figures.filter(
  (f) => f.goal && !(f.goal.on === 'ratio' ? f.value / (f.anchor?.value ?? 1) <= f.goal.max : f.value <= f.goal.max),
);
console.log(
  `bench: ${report.figures.length} figures, ${report.figures.filter((f) => f.goal).length - missed.length} of ${report.figures.filter((f) => f.goal).length} goals met${missed.length ? ` (not met: ${missed.map((f) => f.id).join(', ')})` : ''}; written to ${path.relative(REPO, out) || out}/results.json, results.md and hook-latency.svg`,
);
