import test from 'ava';
import { q, QUOTE_KEEP, QUOTE_WHOLE_MAX } from '../../lib/errors.js';

const a = (n: number): string => 'a'.repeat(n);
// U+1F5A5 (desktop computer) is one character and two UTF-16 units.
const PC = '\u{1f5a5}';

const cases: [string, unknown, string][] = [
  ['a plain value', 'win10', "'win10'"],
  ['the empty string', '', "''"],
  ['a number', 42, "'42'"],
  ['null', null, "'null'"],
  ['control characters made visible', 'a\nb\tc\u007f', "'a\\x0ab\\x09c\\x7f'"],
  ['unicode kept as it is', 'Windows 10 \u00e9\u00fc', "'Windows 10 \u00e9\u00fc'"],
  ['a value of exactly the limit, whole', a(QUOTE_WHOLE_MAX), `'${a(QUOTE_WHOLE_MAX)}'`],
  ['one character more, cut', a(QUOTE_WHOLE_MAX + 1), `'${a(QUOTE_KEEP)}\u2026' (${QUOTE_WHOLE_MAX + 1} characters)`],
  ['10,000 characters, cut', a(10_000), `'${a(QUOTE_KEEP)}\u2026' (10000 characters)`],
  ['a 251-byte VM name, whole', a(251), `'${a(251)}'`],
  ['characters are code points: the limit in astral characters is whole', PC.repeat(QUOTE_WHOLE_MAX), `'${PC.repeat(QUOTE_WHOLE_MAX)}'`],
  ['a cut never splits a surrogate pair', PC.repeat(300), `'${PC.repeat(QUOTE_KEEP)}\u2026' (300 characters)`],
  [
    'control characters of a long value are escaped after the cut',
    '\n'.repeat(1000),
    `'${'\\x0a'.repeat(QUOTE_KEEP)}\u2026' (1000 characters)`,
  ],
  [
    'a long value with a quote inside keeps it (quotes are not escaped)',
    `it's ${a(400)}`,
    `'it's ${a(QUOTE_KEEP - 5)}\u2026' (405 characters)`,
  ],
];

for (const [what, value, expected] of cases) {
  test(`q() quotes ${what}`, (t) => {
    t.is(q(value), expected);
  });
}

test('q() of a 16 MiB value stays short', (t) => {
  const quoted = q('x'.repeat(16 * 2 ** 20));
  t.is(quoted, `'${'x'.repeat(QUOTE_KEEP)}\u2026' (16777216 characters)`);
});
