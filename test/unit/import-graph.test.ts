/**
 * The import graph is a tree of layers (docs/architecture.md, "Layers"): no
 * cycle between files (ESLint's import-x/no-cycle checks that too), no cycle
 * between the folders of lib/ (config and domain must not import each other
 * both ways, the daemon must not take anything from the CLI), nothing in lib/
 * imports service/ or test/, and an `_internal` folder is imported only from
 * its own parent folder.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(path.join(REPO, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(rel)));
    else if (entry.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

/** Relative imports of a file, as repository paths of .ts files. */
async function importsOf(file: string): Promise<string[]> {
  const text = await fs.readFile(path.join(REPO, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g)) {
    const spec = m[1] ?? m[2]!;
    out.push(path.normalize(path.join(path.dirname(file), spec)).replace(/\.js$/, '.ts'));
  }
  return out;
}

/** The folder of lib/ a file belongs to: lib/pci/_internal/x.ts -> 'pci'; lib/errors.ts -> '.' */
function layer(file: string): string {
  const parts = file.split(path.sep);
  return parts.length > 2 ? parts[1]! : '.';
}

function findCycle(graph: Map<string, Set<string>>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): string[] | null => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') return [...stack.slice(stack.indexOf(next)), next];
      if (!state.has(next)) {
        const found = visit(next);
        if (found) return found;
      }
    }
    stack.pop();
    state.set(node, 'done');
    return null;
  };
  for (const node of [...graph.keys()].sort()) {
    if (!state.has(node)) {
      const found = visit(node);
      if (found) return found;
    }
  }
  return null;
}

test('the folders of lib/ import each other without a cycle, and lib/ never imports service/ or test/', async (t) => {
  const files = await sources('lib');
  const folders = new Map<string, Set<string>>();
  const upward: string[] = [];
  for (const file of files) {
    for (const target of await importsOf(file)) {
      if (!target.startsWith(`lib${path.sep}`)) {
        upward.push(`${file} -> ${target}`);
        continue;
      }
      const from = layer(file);
      const to = layer(target);
      if (from === to) continue;
      if (!folders.has(from)) folders.set(from, new Set());
      folders.get(from)!.add(to);
    }
  }
  t.deepEqual(upward, [], 'lib/ imports only lib/');
  const cycle = findCycle(folders);
  t.is(cycle, null, `a cycle between folders: ${cycle?.join(' -> ')}`);
});

test('an _internal folder is imported only from its own parent folder', async (t) => {
  const offenders: string[] = [];
  for (const file of [...(await sources('lib')), ...(await sources('service'))]) {
    for (const target of await importsOf(file)) {
      const at = target.split(path.sep).indexOf('_internal');
      if (at === -1) continue;
      const owner = target.split(path.sep).slice(0, at).join(path.sep);
      if (!file.startsWith(owner + path.sep)) offenders.push(`${file} -> ${target}`);
    }
  }
  t.deepEqual(offenders, []);
});
