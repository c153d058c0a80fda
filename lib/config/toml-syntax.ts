/**
 * TOML text to data, for the daemon's file and the agent's: a syntax error
 * is InvalidConfig with smol-toml's position and reason,
 * `source:line:column: invalid TOML: REASON`.
 */

import { TomlError, parse } from 'smol-toml';

import { InvalidConfig } from '../errors.js';

/**
 * Parse a TOML document.
 *
 * @param source names the text in messages, normally its path.
 * @throws InvalidConfig for a syntax error.
 */
export function parseTomlText(text: string, source: string): Record<string, unknown> {
  try {
    return parse(text);
  } catch (error) {
    if (error instanceof TomlError) {
      // smol-toml's message is "Invalid TOML document: REASON\n\nCODEBLOCK"; keep the reason.
      const reason = error.message.replace(/^Invalid TOML document: /, '').split('\n')[0];
      throw new InvalidConfig(`${source}:${error.line}:${error.column}: invalid TOML: ${reason}`);
    }
    throw error;
  }
}
