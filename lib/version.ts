/**
 * The version of vfio-hookd, the daemon, the agent and the CLI alike. A leaf
 * module (no imports) so that none of them takes it from another; a unit test
 * (test/unit/version.test.ts) keeps it equal to package.json's `version`.
 */
export const VERSION = '0.1.0';
