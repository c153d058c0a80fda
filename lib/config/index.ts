/**
 * lib/config: /etc/vfio-hookd/vfio-hookd.toml (parse, validate, load,
 * follow) and a VM's effective settings at hook time (merge.ts). Every key
 * and default is documented in schema.ts; example.toml shows them in use.
 */

export { ConfigWatcher } from './config-watcher.js';
export type { ConfigWatcherEvents, ConfigWatcherOptions } from './config-watcher.js';

export { formatDuration, parseDuration } from './duration.js';
export { formatFileMode, parseFileMode, parseShmMode } from './file-mode.js';

export { CONFIG_MAX_BYTES, DEFAULT_CONFIG_PATH, loadConfigFile, readConfigText } from './load-config.js';
export { hugepagesNotes, mergeVmSettings } from './merge.js';
export { emptyConfig, parseConfig } from './parse-config.js';
export {
  DEFAULT_LOOKING_GLASS_NAME,
  DEFAULT_QEMU_USERS,
  DEFAULT_SCREAM_NAME,
  DEFAULT_SCREAM_SIZE,
  DEFAULT_SHM_MODE,
  DEFAULT_WRITE_TIMEOUT_MS,
  MAX_WRITE_TIMEOUT_MS,
  MIN_WRITE_TIMEOUT_MS,
} from './schema.js';
export { TomlLocator, formatTomlPath } from './toml-locator.js';
export type { PathSegment, TomlPosition } from './toml-locator.js';
export type { Config, DaemonSettings, LookingGlassSettings, ScreamSettings, VmSettings } from './types.js';
export { validateVmTable, vmSettingsWarnings } from './vm-settings.js';
export type { VmTableResult } from './vm-settings.js';
