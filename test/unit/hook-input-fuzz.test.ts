/**
 * The in-process half of the hook fuzz (test/bus/hook-fuzz.test.ts runs the
 * real hook): the generated cases' expected answers agree with the parsers
 * the daemon uses, and the parsers never fail other than with our own
 * errors (InvalidArgs, InvalidConfig) whatever they get.
 */
import test from 'ava';
import { InvalidArgs, InvalidConfig } from '../../lib/errors.js';
import { parseDomainXml } from '../../lib/domain/index.js';
import { parseHookEvent, stageOf } from '../../lib/lifecycle/hook-event.js';
import { fuzzCases, type FuzzCase } from '../helpers/hook-fuzz.js';

const SEED = Number(process.env['VFIO_HOOK_FUZZ_SEED'] ?? 0x5eed8);
const COUNT = 20_000;

/** What the daemon's parsers say of a case: refused or not, or a crash (any other error). */
function verdict(c: FuzzCase): 'refused' | 'passed' | `crash: ${string}` {
  try {
    const event = parseHookEvent(...c.args);
    // The hook sends the XML for prepare only (its file is read, so decoded, for any sub-operation);
    // only prepare begin parses it, the later stages act on the record prepare made.
    const text = c.args[1] !== 'prepare' ? '' : typeof c.xml === 'string' ? c.xml : new TextDecoder('utf-8', { fatal: true }).decode(c.xml);
    if (stageOf(event) === 'prepare') {
      const domain = parseDomainXml(text);
      if (domain.name !== event.domainName) return 'refused';
    }
    return 'passed';
  } catch (error) {
    if (error instanceof InvalidArgs || error instanceof InvalidConfig || error instanceof TypeError) {
      // TypeError: TextDecoder's refusal of bytes that are not UTF-8 (the daemon turns it into InvalidArgs).
      return 'refused';
    }
    return `crash: ${(error as Error).stack ?? String(error)}`;
  }
}

test(`${COUNT} generated hook inputs: the parsers agree with the oracle and never crash`, (t) => {
  t.log(`seed ${SEED} (set VFIO_HOOK_FUZZ_SEED to replay another)`);
  const disagreements: string[] = [];
  const kinds = new Map<string, number>();
  for (const c of fuzzCases(SEED, COUNT)) {
    kinds.set(c.why, (kinds.get(c.why) ?? 0) + 1);
    // A managed VM's prepare is refused by the configuration, which these parsers do not see.
    if (c.why.includes('sizes disagree')) continue;
    // Answered by the hook itself (hooks/qemu owed_nothing): the parsers never see it.
    if (c.why.includes('answered by the hook')) continue;
    const got = verdict(c);
    const expected = c.refused ? 'refused' : 'passed';
    if (got !== expected) {
      disagreements.push(
        `#${c.index} ${JSON.stringify(c.args).slice(0, 200)} (${c.why}): expected ${expected}, got ${got}; xml ${JSON.stringify(String(c.xml).slice(0, 300))}`,
      );
    }
  }
  t.log(
    `${kinds.size} kinds of case, e.g. ${[...kinds.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 5)
      .map(([k, n]) => `${n} × ${k}`)
      .join(', ')}`,
  );
  t.deepEqual(disagreements.slice(0, 10), [], `${disagreements.length} disagreements`);
  const refused = [...kinds.entries()].filter(
    ([k]) => !k.startsWith('valid') && !k.includes('does not act') && !k.includes('only prepare reads'),
  ).length;
  t.true(refused > 20, 'the refusals are varied');
});

test('the same seed gives the same cases', (t) => {
  const a = fuzzCases(42, 200).map((c) => [c.args, String(c.xml), c.refused]);
  const b = fuzzCases(42, 200).map((c) => [c.args, String(c.xml), c.refused]);
  t.deepEqual(a, b);
});
