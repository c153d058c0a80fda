/**
 * The README's hook latency chart: one row per series, a box from p25 to
 * p75, whiskers from p5 to p95, a bar at the p50 (its value printed), every
 * sample a faint dot. Plain SVG, no dependency, readable on GitHub's light
 * and dark themes (explicit white background).
 */
import { quantile } from './figures.js';

export interface Series {
  readonly label: string;
  readonly samples: readonly number[];
  /** Fill of the box. */
  readonly color: string;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function latencySvg(title: string, series: readonly Series[], subtitle: string): string {
  const width = 760;
  const left = 250;
  const right = 30;
  const rowH = 46;
  const top = 58;
  const height = top + rowH * series.length + 44;
  const max = Math.max(...series.map((s) => quantile(s.samples, 0.95))) * 1.1;
  const step = niceStep(max / 6);
  const x = (ms: number): number => left + (Math.min(ms, max) / max) * (width - left - right);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="13">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${width / 2}" y="40" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`,
  ];
  for (let t = 0; t <= max; t += step) {
    parts.push(
      `<line x1="${x(t).toFixed(1)}" y1="${top - 6}" x2="${x(t).toFixed(1)}" y2="${top + rowH * series.length}" stroke="#ddd"/>`,
      `<text x="${x(t).toFixed(1)}" y="${top + rowH * series.length + 18}" text-anchor="middle" fill="#555">${trim(t)}</text>`,
    );
  }
  parts.push(
    `<text x="${(left + width - right) / 2}" y="${height - 8}" text-anchor="middle" fill="#555">ms (whiskers p5-p95, box p25-p75, bar p50)</text>`,
  );
  series.forEach((s, i) => {
    const cy = top + rowH * i + rowH / 2;
    const [p5, p25, p50, p75, p95] = [0.05, 0.25, 0.5, 0.75, 0.95].map((p) => quantile(s.samples, p)) as [
      number,
      number,
      number,
      number,
      number,
    ];
    parts.push(`<text x="${left - 10}" y="${cy + 4}" text-anchor="end">${esc(s.label)}</text>`);
    for (const v of s.samples)
      parts.push(`<circle cx="${x(v).toFixed(1)}" cy="${cy + 14}" r="1.3" fill="${s.color}" fill-opacity="0.35"/>`);
    parts.push(
      `<line x1="${x(p5).toFixed(1)}" y1="${cy}" x2="${x(p95).toFixed(1)}" y2="${cy}" stroke="#333"/>`,
      `<rect x="${x(p25).toFixed(1)}" y="${cy - 9}" width="${Math.max(1, x(p75) - x(p25)).toFixed(1)}" height="18" fill="${s.color}" stroke="#333"/>`,
      `<line x1="${x(p50).toFixed(1)}" y1="${cy - 11}" x2="${x(p50).toFixed(1)}" y2="${cy + 11}" stroke="#000" stroke-width="2.5"/>`,
      `<text x="${(x(p95) + 6).toFixed(1)}" y="${cy + 4}" fill="#222">${p50.toFixed(1)} ms</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function niceStep(raw: number): number {
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
}

const trim = (n: number): string => String(Number(n.toFixed(2)));
