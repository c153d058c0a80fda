import test from 'ava';
import { parse } from 'smol-toml';

import { TomlLocator, formatTomlPath, type PathSegment, type TomlPosition } from '../../lib/config/index.js';

// Every trap a naive line scanner falls into: strings holding `[`, `=`, `#`
// and quotes, multi-line strings, quoted keys with dots, spaces around dots,
// nested inline tables, arrays of tables, and non-ASCII text before a value.
const DOC = [
  /* 1 */ '# [vm.fake] = "not a table"',
  /* 2 */ 'title = """',
  /* 3 */ '[vm.also-fake]',
  /* 4 */ 'x = "y" # still the string',
  /* 5 */ '"""',
  /* 6 */ "lit = '''a ''' # not a comment'''",
  /* 7 */ '[vm."win.10" . looking-glass]',
  /* 8 */ 'mode = "0669"',
  /* 9 */ 'group = "a\\"b" # "c = d"',
  /* 10 */ '',
  /* 11 */ '[vm.win11]',
  /* 12 */ 'devices = [',
  /* 13 */ '  "0000:0b:00.0", # one',
  /* 14 */ '  [1, [2, 3]],',
  /* 15 */ ']',
  /* 16 */ 'scream = { size = "2M", extra = { deep = true } }',
  /* 17 */ 'note = "日本語"',
  /* 18 */ 'when = 1979-05-27 07:32:00Z',
  /* 19 */ '[[arr]]',
  /* 20 */ 'a = 1',
  /* 21 */ '[[arr]]',
  /* 22 */ 'a = 2',
].join('\n');

const LINES = DOC.split('\n');

test('the test document is valid TOML', (t) => {
  t.notThrows(() => parse(DOC));
});

function at(line: number, needle: string, occurrence = 0): TomlPosition {
  const text = LINES[line - 1]!;
  let index = -1;
  for (let n = 0; n <= occurrence; n++) index = text.indexOf(needle, index + 1);
  if (index < 0) throw new Error(`'${needle}' not on line ${line}: ${text}`);
  return { line, column: index + 1 };
}

const cases: ReadonlyArray<readonly [readonly PathSegment[], TomlPosition, TomlPosition]> = [
  // path, key position, value position
  [['title'], at(2, 'title'), at(2, '"""')],
  [['lit'], at(6, 'lit'), at(6, "'''")],
  [['vm', 'win.10', 'looking-glass'], at(7, 'looking-glass'), at(7, '[')],
  [['vm', 'win.10'], at(7, '"win.10"'), at(7, '[')],
  [['vm', 'win.10', 'looking-glass', 'mode'], at(8, 'mode'), at(8, '"0669"')],
  [['vm', 'win.10', 'looking-glass', 'group'], at(9, 'group'), at(9, '"a')],
  [['vm', 'win11'], at(11, 'win11'), at(11, '[')],
  [['vm', 'win11', 'devices'], at(12, 'devices'), at(12, '[')],
  [['vm', 'win11', 'devices', 0], at(13, '"0000'), at(13, '"0000')],
  [['vm', 'win11', 'devices', 1], at(14, '['), at(14, '[')],
  [['vm', 'win11', 'devices', 1, 1, 0], at(14, '2'), at(14, '2')],
  [['vm', 'win11', 'scream', 'size'], at(16, 'size'), at(16, '"2M"')],
  [['vm', 'win11', 'scream', 'extra', 'deep'], at(16, 'deep'), at(16, 'true')],
  [['vm', 'win11', 'note'], at(17, 'note'), at(17, '"日本語"')],
  [['vm', 'win11', 'when'], at(18, 'when'), at(18, '1979')],
  [['arr', 0, 'a'], at(20, 'a'), at(20, '1')],
  [['arr', 1, 'a'], at(22, 'a'), at(22, '2')],
  [['arr', 1], at(21, '[[arr]]'), at(21, '[[arr]]')],
];

const locator = new TomlLocator(DOC);

for (const [path, key, value] of cases) {
  test(`locates ${formatTomlPath(path)}`, (t) => {
    t.deepEqual(locator.keyPosition(path), key, 'key');
    t.deepEqual(locator.valuePosition(path), value, 'value');
  });
}

test('a key that is not in the text falls back to its nearest ancestor', (t) => {
  t.deepEqual(locator.valuePosition(['vm', 'win.10', 'looking-glass', 'size']), at(7, '['));
  t.deepEqual(locator.keyPosition(['vm', 'win11', 'units', 3]), at(11, '['));
  t.deepEqual(locator.valuePosition(['nowhere']), { line: 1, column: 1 });
  t.false(locator.has(['vm', 'fake']));
  t.false(locator.has(['vm', 'also-fake']));
  t.true(locator.has(['vm', 'win11', 'devices', 0]));
});

test('columns agree with smol-toml for text before the error', (t) => {
  // smol-toml counts UTF-16 code units; so do we.
  const text = 'a = "日本語"\nb = "x"\n';
  t.deepEqual(new TomlLocator(text).valuePosition(['b']), { line: 2, column: 5 });
});

test('formatTomlPath quotes keys that are not bare and indexes arrays', (t) => {
  t.is(formatTomlPath(['vm', 'win10', 'looking-glass', 'mode']), 'vm.win10.looking-glass.mode');
  t.is(formatTomlPath(['vm', 'Windows 10', 'devices', 2]), 'vm."Windows 10".devices[2]');
  t.is(formatTomlPath(['vm', 'a"b']), 'vm."a\\"b"');
  t.is(formatTomlPath([]), '');
});
