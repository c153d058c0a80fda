/**
 * test/nix/run.sh's round-trip check: the TOML nix/settings.nix rendered,
 * read back by smol-toml (the daemon's parser) and by Nix's own
 * builtins.fromTOML, is the settings attribute set it came from, nulls left
 * out. Usage: node --import tsx test/nix/same-settings.ts RENDERED.toml SETTINGS.json FROMTOML.json
 * Exit 0 when all three agree; else 1 with the first difference on stderr.
 */
import fs from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { parse } from 'smol-toml';

function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== null)
        .map(([k, v]) => [k, withoutNulls(v)]),
    );
  }
  return value;
}

const [tomlFile, settingsFile, fromTomlFile] = process.argv.slice(2);
if (tomlFile === undefined || settingsFile === undefined || fromTomlFile === undefined) {
  process.stderr.write('usage: same-settings.ts RENDERED.toml SETTINGS.json FROMTOML.json\n');
  process.exit(2);
}
const expected = withoutNulls(JSON.parse(fs.readFileSync(settingsFile, 'utf8')));
// JSON once more: smol-toml's tables are plain objects already, but its integers may be bigints.
const bySmolToml: unknown = JSON.parse(
  JSON.stringify(parse(fs.readFileSync(tomlFile, 'utf8')), (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v)),
);
const byNix: unknown = JSON.parse(fs.readFileSync(fromTomlFile, 'utf8'));
for (const [who, got] of [
  ['smol-toml', bySmolToml],
  ['builtins.fromTOML', byNix],
] as const) {
  if (!isDeepStrictEqual(got, expected)) {
    process.stderr.write(`${who} reads ${JSON.stringify(got)}\nbut the settings are ${JSON.stringify(expected)}\n`);
    process.exit(1);
  }
}
