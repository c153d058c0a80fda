/**
 * Sizes of the shared-memory files: parsing what the configuration says,
 * formatting for messages, and the sizes Looking Glass and Scream need.
 *
 * Units are binary only, because every consumer of these sizes (QEMU's
 * `ivshmem-plain`, libvirt's `<shmem><size unit='M'>`, Looking Glass) counts
 * in powers of two: `K` = KiB = 1024, `M` = MiB, `G` = GiB. Decimal units
 * (`MB`, `KB`, `GB`) are refused rather than guessed, since libvirt reads
 * `MB` as 1000*1000 and such a size would not match the domain XML.
 */

import { InvalidArgs, q } from '../errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Scream's documented IVSHMEM size: 2 MiB. */
export const SCREAM_DEFAULT_SIZE = 2 * MiB;

/**
 * The smallest Scream buffer we accept: 1 MiB. This is our own floor, not a
 * Scream limit: anything smaller is almost certainly a unit mistake (`2`
 * bytes meant as 2 MiB).
 */
export const SCREAM_MIN_SIZE = 1 * MiB;

/** Largest width or height `parseResolution` accepts (the largest texture size of current GPUs). */
export const MAX_RESOLUTION_SIDE = 16384;

const UNIT_FACTORS: Readonly<Record<string, number>> = { k: KiB, m: MiB, g: GiB };

/*
 * digits, then optionally one unit letter (any case), then optionally `iB`
 * (any case). No sign, no fraction, no whitespace: a config value with any of
 * those is more likely a mistake than an intent.
 */
const SIZE_RE = /^([0-9]+)(?:([kKmMgG])(?:[iI][bB])?)?$/;
const DECIMAL_UNIT_RE = /^([0-9]+)([kKmMgG])[bB]$/;

/**
 * Parse a size: plain bytes (`33554432`) or a whole number with a binary unit,
 * `K`, `M` or `G`, in any case, optionally followed by `iB`: `32M`, `32m`,
 * `32MiB`, `512K`, `1G`. The result is a positive safe integer of bytes.
 *
 * @throws InvalidArgs for zero, signs, fractions, whitespace, decimal units
 *   (`32MB`), anything else, or a result beyond `Number.MAX_SAFE_INTEGER`.
 */
export function parseSize(text: string): number {
  if (typeof text !== 'string') {
    throw new InvalidArgs(`Invalid size ${q(text)}: expected a string such as '32M'`);
  }
  const decimal = DECIMAL_UNIT_RE.exec(text);
  if (decimal) {
    throw new InvalidArgs(
      `Invalid size ${q(text)}: decimal units are not accepted, sizes are binary; use '${decimal[1]}${decimal[2]!.toUpperCase()}' for ${decimal[1]} ${decimal[2]!.toUpperCase()}iB`,
    );
  }
  const match = SIZE_RE.exec(text);
  if (!match) {
    throw new InvalidArgs(`Invalid size ${q(text)}: expected bytes or a number with K, M or G (binary), e.g. '32M'`);
  }
  const digits = match[1]!;
  const factor = match[2] === undefined ? 1 : UNIT_FACTORS[match[2].toLowerCase()]!;
  // BigInt keeps the overflow check exact for arbitrarily long digit strings.
  const bytes = BigInt(digits) * BigInt(factor);
  if (bytes === 0n) {
    throw new InvalidArgs(`Invalid size ${q(text)}: must be greater than zero`);
  }
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgs(`Invalid size ${q(text)}: larger than the maximum of ${Number.MAX_SAFE_INTEGER} bytes`);
  }
  return Number(bytes);
}

/**
 * Format bytes for a message in the largest binary unit that divides it
 * exactly: `33554432` -> `32M`, `1536` -> `1536`. The result parses back with
 * `parseSize` to the same number. Values that are not non-negative safe
 * integers are returned as `String(bytes)`, since this only ever feeds text.
 */
export function formatSize(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) return String(bytes);
  if (bytes % GiB === 0) return `${bytes / GiB}G`;
  if (bytes % MiB === 0) return `${bytes / MiB}M`;
  if (bytes % KiB === 0) return `${bytes / KiB}K`;
  return String(bytes);
}

/** True for 1, 2, 4, 8, ... up to 2^52; false for anything else (0, negatives, fractions, NaN). */
export function isPowerOfTwo(n: number): boolean {
  if (!Number.isSafeInteger(n) || n <= 0) return false;
  const b = BigInt(n);
  return (b & (b - 1n)) === 0n;
}

export interface Resolution {
  /** Width in pixels, 1..MAX_RESOLUTION_SIDE. */
  readonly width: number;
  /** Height in pixels, 1..MAX_RESOLUTION_SIDE. */
  readonly height: number;
}

const RESOLUTION_RE = /^([0-9]+)[xX]([0-9]+)$/;

/**
 * Parse `WIDTHxHEIGHT` (`2560x1440`; `X` is accepted too, no spaces). Both
 * sides must be whole numbers from 1 to `MAX_RESOLUTION_SIDE`.
 *
 * @throws InvalidArgs naming the value and what was expected.
 */
export function parseResolution(text: string): Resolution {
  const match = typeof text === 'string' ? RESOLUTION_RE.exec(text) : null;
  if (!match) {
    throw new InvalidArgs(`Invalid resolution ${q(text)}: expected WIDTHxHEIGHT in pixels, e.g. '2560x1440'`);
  }
  const resolution = { width: Number(match[1]), height: Number(match[2]) };
  checkResolution(resolution, text);
  return resolution;
}

function checkResolution(r: Resolution, shown: unknown): void {
  const ok = (side: number) => Number.isInteger(side) && side >= 1 && side <= MAX_RESOLUTION_SIDE;
  if (!ok(r.width) || !ok(r.height)) {
    throw new InvalidArgs(`Invalid resolution ${q(shown)}: width and height must be whole numbers from 1 to ${MAX_RESOLUTION_SIDE}`);
  }
}

export interface LookingGlassSizeOptions {
  /** The guest renders HDR, 8 bytes a pixel instead of 4. Default `false`. */
  hdr?: boolean;
}

/**
 * The IVSHMEM size Looking Glass B7 needs for a resolution, in bytes:
 * `2^ceil(log2(W*H*bpp*2 / MiB + 10))` MiB, bpp 4 (8 with HDR); two frames
 * plus 10 MiB for the cursor and headers, rounded up to a power of two.
 * 1920x1080 -> 32 MiB, 2560x1440 -> 64 MiB, 3840x2160 -> 128 MiB (256 HDR).
 *
 * Computed in integers (the smallest power-of-two MiB count that holds the
 * frames and the 10 MiB), so no floating-point log can round a boundary case
 * the wrong way.
 *
 * @throws InvalidArgs for a malformed resolution.
 */
export function lookingGlassSize(resolution: string | Resolution, opts: LookingGlassSizeOptions = {}): number {
  let r: Resolution;
  if (typeof resolution === 'string') {
    r = parseResolution(resolution);
  } else {
    r = resolution;
    checkResolution(r, `${String(r?.width)}x${String(r?.height)}`);
  }
  const bytesPerPixel = opts.hdr === true ? 8 : 4;
  const needed = r.width * r.height * bytesPerPixel * 2 + 10 * MiB;
  let size = MiB;
  while (size < needed) size *= 2;
  return size;
}

/**
 * Check a Scream IVSHMEM size: a power of two (a PCI BAR is always one, so
 * QEMU rejects anything else) and at least `SCREAM_MIN_SIZE`. Returns the
 * size for chaining.
 *
 * @throws InvalidArgs saying which rule failed and suggesting `SCREAM_DEFAULT_SIZE`.
 */
export function validateScreamSize(bytes: number): number {
  if (!isPowerOfTwo(bytes)) {
    throw new InvalidArgs(
      `Invalid Scream size ${q(formatSize(bytes))}: must be a power of two; use '${formatSize(SCREAM_DEFAULT_SIZE)}' (the Scream default)`,
    );
  }
  if (bytes < SCREAM_MIN_SIZE) {
    throw new InvalidArgs(
      `Invalid Scream size ${q(formatSize(bytes))}: must be at least ${formatSize(SCREAM_MIN_SIZE)}; use '${formatSize(SCREAM_DEFAULT_SIZE)}' (the Scream default)`,
    );
  }
  return bytes;
}
