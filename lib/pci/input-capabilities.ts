/**
 * Is an input device a keyboard or a mouse? Decided from its capability
 * bitmaps in `<sysfs>/class/input/inputN/capabilities/{ev,key,rel}`.
 *
 * Verified against the kernel's drivers/input/input.c (input_print_bitmap):
 * each bitmap is printed as `unsigned long` words in hex, highest word first,
 * separated by spaces, leading zero words left out (`1f0000 0 0 0 0`). A word
 * is BITS_PER_LONG wide, 64 on the 64-bit kernels VFIO hosts run (x86_64,
 * aarch64); a 32-bit kernel would print 32-bit words and is not supported.
 *
 * The rules follow systemd's udev input_id builtin (what desktops use to
 * decide ID_INPUT_KEYBOARD and ID_INPUT_MOUSE), read from its source:
 * - keyboard: EV_KEY, and every key of the first word but KEY_RESERVED (bits
 *   1–31: Esc, the digits, Q to S) — a full keyboard, not a power button or
 *   a remote's few keys;
 * - mouse: EV_KEY with BTN_MOUSE (BTN_LEFT: mice, touchpads, trackballs), or
 *   EV_REL with both REL_X and REL_Y. Broader than udev's ID_INPUT_MOUSE on
 *   purpose: a touchpad or a button-less pointer is as much the host's as a
 *   mouse.
 * HDMI and headphone jacks (EV_SW only), gamepads (BTN_SOUTH, EV_ABS) and
 * media-key receivers are neither.
 */

export type InputKind = 'keyboard' | 'mouse';

/** The raw capability attributes; null when absent. */
export interface InputCapabilities {
  readonly ev: string | null;
  readonly key: string | null;
  readonly rel: string | null;
}

const WORD_BITS = 64n;
const EV_KEY = 0x01;
const EV_REL = 0x02;
const REL_X = 0x00;
const REL_Y = 0x01;
const BTN_MOUSE = 0x110;
/** KEY_ESC (1) through KEY_S (31): the first word of a full keyboard, KEY_RESERVED (0) excepted. */
const FULL_KEYBOARD_MASK = 0xfffffffen;

/**
 * A capability bitmap as one number; null when the text is not a bitmap
 * (then nothing is assumed about the device).
 */
export function parseCapabilityBitmap(text: string): bigint | null {
  const words = text.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0 || !words.every((w) => /^[0-9a-f]{1,16}$/i.test(w))) return null;
  let value = 0n;
  for (const w of words) value = (value << WORD_BITS) | BigInt(`0x${w}`);
  return value;
}

function hasBit(bitmap: bigint | null, bit: number): boolean {
  return bitmap !== null && ((bitmap >> BigInt(bit)) & 1n) === 1n;
}

/** What the device is, in a fixed order: `['keyboard']`, `['mouse']`, both, or none. */
export function inputKinds(caps: InputCapabilities): InputKind[] {
  const ev = caps.ev === null ? null : parseCapabilityBitmap(caps.ev);
  const key = caps.key === null ? null : parseCapabilityBitmap(caps.key);
  const rel = caps.rel === null ? null : parseCapabilityBitmap(caps.rel);
  const kinds: InputKind[] = [];
  const keys = hasBit(ev, EV_KEY);
  if (keys && key !== null && (key & FULL_KEYBOARD_MASK) === FULL_KEYBOARD_MASK) kinds.push('keyboard');
  if ((keys && hasBit(key, BTN_MOUSE)) || (hasBit(ev, EV_REL) && hasBit(rel, REL_X) && hasBit(rel, REL_Y))) kinds.push('mouse');
  return kinds;
}
