import test from 'ava';
import { parseHookEvent, stageOf } from '../../lib/lifecycle/hook-event.js';
import { InvalidArgs } from '../../lib/errors.js';

const stages: [string, string, ReturnType<typeof stageOf>][] = [
  ['prepare', 'begin', 'prepare'],
  ['start', 'begin', 'none'],
  ['started', 'begin', 'started'],
  ['stopped', 'end', 'stopped'],
  ['release', 'end', 'release'],
  ['reconnect', 'begin', 'reconnect'],
  ['migrate', 'begin', 'none'],
  ['restore', 'begin', 'none'],
  ['attach', 'begin', 'none'],
  ['prepare', 'end', 'none'],
];
for (const [op, sub, stage] of stages) {
  test(`'${op} ${sub}' is stage ${stage}`, (t) => {
    t.is(stageOf(parseHookEvent('win10', op, sub, '-')), stage);
  });
}

const bad: [string, string, string, string, RegExp][] = [
  ['', 'prepare', 'begin', '-', /^Invalid domain name '': must not be empty$/],
  ['a/b', 'prepare', 'begin', '-', /^Invalid domain name 'a\/b': must not contain '\/'$/],
  ['win10', 'explode', 'begin', '-', /^Invalid hook operation 'explode': expected one of prepare, start, /],
  ['win10', 'prepare', 'middle', '-', /^Invalid hook sub-operation 'middle': expected begin, end or '-'$/],
  ['win10', 'prepare', 'begin', 'x\ny', /^Invalid hook extra argument 'x\\x0ay': control characters/],
];
for (const [vm, op, sub, extra, message] of bad) {
  test(`refuses hook arguments ${JSON.stringify([vm, op, sub, extra])}`, (t) => {
    const error = t.throws(() => parseHookEvent(vm, op, sub, extra), { instanceOf: InvalidArgs });
    t.regex(error.message, message);
  });
}
