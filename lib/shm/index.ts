/**
 * lib/shm: the shared-memory files of Looking Glass and Scream under the shm
 * root (`/dev/shm`), their sizes, names and owners. Internals (flags, checks)
 * stay in their modules.
 */

export {
  GiB,
  KiB,
  MAX_RESOLUTION_SIDE,
  MiB,
  SCREAM_DEFAULT_SIZE,
  SCREAM_MIN_SIZE,
  formatSize,
  isPowerOfTwo,
  lookingGlassSize,
  parseResolution,
  parseSize,
  validateScreamSize,
} from './size.js';
export type { LookingGlassSizeOptions, Resolution } from './size.js';

export { SHM_NAME_MAX_BYTES, validateShmName } from './shm-name.js';
export { shmModeProblem, shmModeWarning } from './shm-mode.js';

export { ensureShmFile, inspectShmFile, removeShmFile } from './shm-file.js';
export type {
  EnsureShmFileOptions,
  EnsureShmFileResult,
  RemoveShmFileOptions,
  RemoveShmFileResult,
  ShmFileInfo,
  ShmFileState,
} from './shm-file.js';
export type { ShmFileRef, ShmFileSpec } from './shm-file-spec.js';
export type { ShmFileType } from './shm-entry.js';

export { checkAccountName, resolveGid, resolvePrimaryGid, resolveUid, resolveUids, userNameOf } from './accounts.js';
export type { AccountLookupOptions } from './accounts.js';

export { MODPROBE_DIRS, kvmfrModuleSize, kvmfrPresent, parseStaticSizes, planKvmfr, undoKvmfr } from './kvmfr.js';
export type { KvmfrChange, KvmfrOptions, KvmfrRecord, KvmfrSettings } from './kvmfr.js';
