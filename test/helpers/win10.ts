/**
 * The blog's win10 VM as the bus tests and benchmarks use it: its domain XML
 * (test/fixtures/domains/win10.xml: the RX 590's two functions as
 * managed='no' hostdevs, a 32M Looking Glass and a 2M Scream shmem) and a
 * configuration table that manages it on the simulated reference host.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { REPO } from './private-bus.js';

export const WIN10_XML = await fs.readFile(path.join(REPO, 'test', 'fixtures', 'domains', 'win10.xml'), 'utf8');

/** Owner uid 1000, group 64055 (numbers: the test machine need not have these users). */
export const WIN10_CONFIG = `
[vm.win10]
devices = ["0000:0b:00.0"]
user = "1000"
units = ["looking-glass-client@looking-glass.service"]

[vm.win10.looking-glass]
size = "32M"
group = "64055"

[vm.win10.scream]
size = "2M"
`;
