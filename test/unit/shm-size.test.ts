import test from 'ava';

import { InvalidArgs } from '../../lib/errors.js';
import {
  SCREAM_DEFAULT_SIZE,
  formatSize,
  isPowerOfTwo,
  lookingGlassSize,
  parseResolution,
  parseSize,
  validateScreamSize,
  validateShmName,
} from '../../lib/shm/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const JUNK = "expected bytes or a number with K, M or G (binary), e.g. '32M'";

// --- parseSize ---

const goodSizes: ReadonlyArray<readonly [string, number]> = [
  ['33554432', 32 * MiB],
  ['1', 1],
  ['32M', 32 * MiB],
  ['32MiB', 32 * MiB],
  ['32m', 32 * MiB],
  ['32mib', 32 * MiB],
  ['2M', 2 * MiB],
  ['512K', 512 * KiB],
  ['512k', 512 * KiB],
  ['512KiB', 512 * KiB],
  ['1G', GiB],
  ['1GiB', GiB],
  ['64m', 64 * MiB],
  ['032M', 32 * MiB],
  ['8388607G', 8388607 * GiB],
  [String(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
];

for (const [text, bytes] of goodSizes) {
  test(`parseSize accepts '${text}' as ${bytes} bytes`, (t) => {
    t.is(parseSize(text), bytes);
  });
}

const badSizes: ReadonlyArray<readonly [string, string]> = [
  ['32X', `Invalid size '32X': ${JUNK}`],
  ['', `Invalid size '': ${JUNK}`],
  ['M', `Invalid size 'M': ${JUNK}`],
  ['-1', `Invalid size '-1': ${JUNK}`],
  ['-32M', `Invalid size '-32M': ${JUNK}`],
  ['+32M', `Invalid size '+32M': ${JUNK}`],
  ['1.5M', `Invalid size '1.5M': ${JUNK}`],
  ['0.5G', `Invalid size '0.5G': ${JUNK}`],
  ['32 M', `Invalid size '32 M': ${JUNK}`],
  [' 32M', `Invalid size ' 32M': ${JUNK}`],
  ['32M\n', `Invalid size '32M\\x0a': ${JUNK}`],
  ['0x20', `Invalid size '0x20': ${JUNK}`],
  ['1e6', `Invalid size '1e6': ${JUNK}`],
  ['32T', `Invalid size '32T': ${JUNK}`],
  ['32Mi', `Invalid size '32Mi': ${JUNK}`],
  ['32iB', `Invalid size '32iB': ${JUNK}`],
  ['0', "Invalid size '0': must be greater than zero"],
  ['0M', "Invalid size '0M': must be greater than zero"],
  ['000', "Invalid size '000': must be greater than zero"],
  ['32MB', "Invalid size '32MB': decimal units are not accepted, sizes are binary; use '32M' for 32 MiB"],
  ['512kb', "Invalid size '512kb': decimal units are not accepted, sizes are binary; use '512K' for 512 KiB"],
  ['1GB', "Invalid size '1GB': decimal units are not accepted, sizes are binary; use '1G' for 1 GiB"],
  ['9007199254740992', "Invalid size '9007199254740992': larger than the maximum of 9007199254740991 bytes"],
  ['8388608G', "Invalid size '8388608G': larger than the maximum of 9007199254740991 bytes"],
  ['99999999999999999999999999M', "Invalid size '99999999999999999999999999M': larger than the maximum of 9007199254740991 bytes"],
];

for (const [text, message] of badSizes) {
  test(`parseSize refuses ${JSON.stringify(text)}`, (t) => {
    t.throws(() => parseSize(text), { instanceOf: InvalidArgs, message });
  });
}

// --- formatSize ---

const formatted: ReadonlyArray<readonly [number, string]> = [
  [32 * MiB, '32M'],
  [2 * MiB, '2M'],
  [512 * KiB, '512K'],
  [GiB, '1G'],
  [3 * GiB, '3G'],
  [1536, '1536'],
  [1536 * KiB, '1536K'],
  [1, '1'],
  [0, '0'],
];

for (const [bytes, text] of formatted) {
  test(`formatSize writes ${bytes} as '${text}'`, (t) => {
    t.is(formatSize(bytes), text);
  });
}

test('formatSize output parses back to the same number', (t) => {
  for (const bytes of [1, 1000, 1536, 4096, 32 * MiB, 3 * GiB, Number.MAX_SAFE_INTEGER]) {
    t.is(parseSize(formatSize(bytes)), bytes);
  }
});

// --- parseResolution ---

const goodResolutions: ReadonlyArray<readonly [string, number, number]> = [
  ['2560x1440', 2560, 1440],
  ['1920x1080', 1920, 1080],
  ['3840X2160', 3840, 2160],
  ['1x1', 1, 1],
  ['16384x16384', 16384, 16384],
];

for (const [text, width, height] of goodResolutions) {
  test(`parseResolution accepts '${text}'`, (t) => {
    t.deepEqual(parseResolution(text), { width, height });
  });
}

const SHAPE = "expected WIDTHxHEIGHT in pixels, e.g. '2560x1440'";
const RANGE = 'width and height must be whole numbers from 1 to 16384';

const badResolutions: ReadonlyArray<readonly [string, string]> = [
  ['2560*1440', `Invalid resolution '2560*1440': ${SHAPE}`],
  ['2560 x 1440', `Invalid resolution '2560 x 1440': ${SHAPE}`],
  ['2560x', `Invalid resolution '2560x': ${SHAPE}`],
  ['x1440', `Invalid resolution 'x1440': ${SHAPE}`],
  ['1440p', `Invalid resolution '1440p': ${SHAPE}`],
  ['', `Invalid resolution '': ${SHAPE}`],
  ['-2560x1440', `Invalid resolution '-2560x1440': ${SHAPE}`],
  ['2560.5x1440', `Invalid resolution '2560.5x1440': ${SHAPE}`],
  ['2560x1440x2', `Invalid resolution '2560x1440x2': ${SHAPE}`],
  ['0x1440', `Invalid resolution '0x1440': ${RANGE}`],
  ['2560x0', `Invalid resolution '2560x0': ${RANGE}`],
  ['16385x1080', `Invalid resolution '16385x1080': ${RANGE}`],
  ['1920x99999999999', `Invalid resolution '1920x99999999999': ${RANGE}`],
];

for (const [text, message] of badResolutions) {
  test(`parseResolution refuses '${text}'`, (t) => {
    t.throws(() => parseResolution(text), { instanceOf: InvalidArgs, message });
  });
}

// --- lookingGlassSize (Looking Glass B7: 2^ceil(log2(W*H*bpp*2/MiB + 10)) MiB) ---

const lookingGlass: ReadonlyArray<readonly [string, boolean, number]> = [
  ['1920x1080', false, 32 * MiB],
  ['2560x1440', false, 64 * MiB],
  ['3840x2160', false, 128 * MiB],
  ['1920x1080', true, 64 * MiB],
  ['2560x1440', true, 128 * MiB],
  ['3840x2160', true, 256 * MiB],
  ['1x1', false, 16 * MiB],
  // two 512 KiB frames + 10 MiB = 11 MiB, rounded up to 16
  ['512x256', false, 16 * MiB],
  // exactly 6 MiB of frames + 10 = 16 MiB: a power of two is not rounded up further
  ['1024x768', false, 16 * MiB],
];

for (const [resolution, hdr, bytes] of lookingGlass) {
  test(`lookingGlassSize gives ${bytes / MiB} MiB for ${resolution}${hdr ? ' HDR' : ''}`, (t) => {
    t.is(lookingGlassSize(resolution, { hdr }), bytes);
  });
}

test('lookingGlassSize takes a width and height object and defaults to SDR', (t) => {
  t.is(lookingGlassSize({ width: 2560, height: 1440 }), 64 * MiB);
  t.is(lookingGlassSize('3840x2160'), 128 * MiB);
});

test('lookingGlassSize refuses a bad resolution string or object', (t) => {
  t.throws(() => lookingGlassSize('4k'), { instanceOf: InvalidArgs, message: `Invalid resolution '4k': ${SHAPE}` });
  t.throws(() => lookingGlassSize({ width: 0, height: 1080 }), {
    instanceOf: InvalidArgs,
    message: `Invalid resolution '0x1080': ${RANGE}`,
  });
  t.throws(() => lookingGlassSize({ width: 1920.5, height: 1080 }), {
    instanceOf: InvalidArgs,
    message: `Invalid resolution '1920.5x1080': ${RANGE}`,
  });
});

// --- isPowerOfTwo and Scream ---

test('isPowerOfTwo accepts powers of two and nothing else', (t) => {
  for (const n of [1, 2, 4, 1024, 2 * MiB, 2 ** 52]) t.true(isPowerOfTwo(n), String(n));
  for (const n of [0, -2, 3, 6, 3 * MiB, 1.5, Number.NaN, Infinity, 2 ** 53]) t.false(isPowerOfTwo(n), String(n));
});

test('SCREAM_DEFAULT_SIZE is 2 MiB and valid', (t) => {
  t.is(SCREAM_DEFAULT_SIZE, 2 * MiB);
  t.is(validateScreamSize(SCREAM_DEFAULT_SIZE), 2 * MiB);
});

test('validateScreamSize accepts powers of two from 1 MiB', (t) => {
  for (const n of [MiB, 2 * MiB, 4 * MiB, 64 * MiB]) t.is(validateScreamSize(n), n);
});

const badScream: ReadonlyArray<readonly [number, string]> = [
  [3 * MiB, "Invalid Scream size '3M': must be a power of two; use '2M' (the Scream default)"],
  [1536 * KiB, "Invalid Scream size '1536K': must be a power of two; use '2M' (the Scream default)"],
  [0, "Invalid Scream size '0': must be a power of two; use '2M' (the Scream default)"],
  [-2, "Invalid Scream size '-2': must be a power of two; use '2M' (the Scream default)"],
  [2, "Invalid Scream size '2': must be at least 1M; use '2M' (the Scream default)"],
  [512 * KiB, "Invalid Scream size '512K': must be at least 1M; use '2M' (the Scream default)"],
];

for (const [bytes, message] of badScream) {
  test(`validateScreamSize refuses ${bytes} bytes`, (t) => {
    t.throws(() => validateScreamSize(bytes), { instanceOf: InvalidArgs, message });
  });
}

// --- validateShmName ---

test('validateShmName accepts plain file names and returns them', (t) => {
  for (const name of ['looking-glass', 'scream', 'scream-ivshmem', 'a', '...', '.hidden', 'lg win10', 'é'.repeat(127)]) {
    t.is(validateShmName(name), name);
  }
  t.is(validateShmName('x'.repeat(255)), 'x'.repeat(255));
});

const FIX = "use a plain file name such as 'looking-glass'";

const badNames: ReadonlyArray<readonly [string, string]> = [
  ['', `Invalid shared memory name '': must not be empty; ${FIX}`],
  ['.', `Invalid shared memory name '.': names a directory, not a file; ${FIX}`],
  ['..', `Invalid shared memory name '..': names a directory, not a file; ${FIX}`],
  ['a/b', `Invalid shared memory name 'a/b': must not contain '/'; ${FIX}`],
  ['/etc/shadow', `Invalid shared memory name '/etc/shadow': must not contain '/'; ${FIX}`],
  ['../etc', `Invalid shared memory name '../etc': must not contain '/'; ${FIX}`],
  ['lg/', `Invalid shared memory name 'lg/': must not contain '/'; ${FIX}`],
  ['lg\0', `Invalid shared memory name 'lg\\x00': must not contain control characters; ${FIX}`],
  ['lg\n', `Invalid shared memory name 'lg\\x0a': must not contain control characters; ${FIX}`],
  ['lg\u007f', `Invalid shared memory name 'lg\\x7f': must not contain control characters; ${FIX}`],
  ['lg\u0085', `Invalid shared memory name 'lg\u0085': must not contain control characters; ${FIX}`],
  ['lg\ud800', `Invalid shared memory name 'lg\ud800': not valid Unicode (unpaired surrogate); ${FIX}`],
  ['x'.repeat(256), `Invalid shared memory name '${'x'.repeat(256)}': 256 bytes long, at most 255 allowed; use a shorter name`],
  ['é'.repeat(128), `Invalid shared memory name '${'é'.repeat(128)}': 256 bytes long, at most 255 allowed; use a shorter name`],
];

function label(name: string): string {
  if (name.length > 20) return `a ${name.length}-character name of '${name[0]}'`;
  return JSON.stringify(name).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

for (const [name, message] of badNames) {
  test(`validateShmName refuses ${label(name)}`, (t) => {
    t.throws(() => validateShmName(name), { instanceOf: InvalidArgs, message });
  });
}
