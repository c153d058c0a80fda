/**
 * The libvirt qemu hook's arguments, checked before anything happens:
 * `qemu VM OPERATION SUB-OPERATION EXTRA`, the domain XML on stdin.
 */
import { InvalidArgs, q } from '../errors.js';
import { vmNameProblem } from '../names/vm-name.js';

/** Operations libvirt's qemu driver calls the hook with (libvirt hooks documentation). */
export const OPERATIONS = ['prepare', 'start', 'started', 'stopped', 'release', 'migrate', 'restore', 'reconnect', 'attach'] as const;
export const SUB_OPERATIONS = ['begin', 'end', '-'] as const;

type Operation = (typeof OPERATIONS)[number];
type SubOperation = (typeof SUB_OPERATIONS)[number];

export interface HookEvent {
  readonly domainName: string;
  readonly operation: Operation;
  readonly subOperation: SubOperation;
  readonly extra: string;
}

export function parseHookEvent(domainName: string, operation: string, subOperation: string, extra: string): HookEvent {
  const problem = vmNameProblem(domainName);
  if (problem !== null) throw new InvalidArgs(`Invalid domain name ${q(domainName)}: ${problem}`);
  if (!(OPERATIONS as readonly string[]).includes(operation)) {
    throw new InvalidArgs(`Invalid hook operation ${q(operation)}: expected one of ${OPERATIONS.join(', ')}`);
  }
  if (!(SUB_OPERATIONS as readonly string[]).includes(subOperation)) {
    throw new InvalidArgs(`Invalid hook sub-operation ${q(subOperation)}: expected begin, end or '-'`);
  }
  if (extra.length > 4096 || /[\u0000-\u001f]/.test(extra)) {
    throw new InvalidArgs(`Invalid hook extra argument ${q(extra.slice(0, 64))}: control characters or over 4096 characters`);
  }
  return { domainName, operation: operation as Operation, subOperation: subOperation as SubOperation, extra };
}

/** What the daemon does for an event (the lifecycle table of DESIGN.md), as data. */
export type HookStage = 'prepare' | 'started' | 'stopped' | 'release' | 'reconnect' | 'none';

export function stageOf(event: HookEvent): HookStage {
  const key = `${event.operation} ${event.subOperation}`;
  switch (key) {
    case 'prepare begin':
      return 'prepare';
    case 'started begin':
      return 'started';
    case 'stopped end':
      return 'stopped';
    case 'release end':
      return 'release';
    case 'reconnect begin':
      return 'reconnect';
    default:
      return 'none';
  }
}
