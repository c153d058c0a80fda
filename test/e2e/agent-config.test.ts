/**
 * The agent's own configuration file, `~/.config/vfio-hookd/agent.toml`
 * (pure parsing; kept beside the agent's e2e tests).
 */
import test from 'ava';
import path from 'node:path';
import { defaultAgentConfigPath, loadAgentConfig, parseAgentConfig } from '../../lib/agent/agent-config.js';
import { tempDir } from '../helpers/temp-dir.js';

test('[vm.NAME] units are read, checked and deduplicated', (t) => {
  const config = parseAgentConfig(
    '[vm.win10]\nunits = ["looking-glass-client@looking-glass.service", "scream-receiver@scream.service", "scream-receiver@scream.service"]\n[vm.linux]\n',
    'agent.toml',
  );
  t.deepEqual(config.vms.get('win10'), ['looking-glass-client@looking-glass.service', 'scream-receiver@scream.service']);
  t.deepEqual(config.vms.get('linux'), []);
});

test('a bad file says where and what', (t) => {
  t.throws(() => parseAgentConfig('[vm.win10\n', 'agent.toml'), { message: /^agent\.toml:1:\d+: invalid TOML/ });
  t.throws(() => parseAgentConfig('[vm.win10]\nunits = ["looking-glass-client@.service"]\n', 'agent.toml'), {
    message: /\[vm\.win10\] units: .*template needs an instance/,
  });
  t.throws(() => parseAgentConfig('[vm.win10]\nunit = []\n', 'agent.toml'), { message: /unknown key 'unit'/ });
  t.throws(() => parseAgentConfig('units = []\n', 'agent.toml'), { message: /unknown table or key 'units'/ });
});

test('the file lives under XDG_CONFIG_HOME (default ~/.config); a missing one is empty', async (t) => {
  t.is(defaultAgentConfigPath({ HOME: '/home/alex' }), '/home/alex/.config/vfio-hookd/agent.toml');
  t.is(defaultAgentConfigPath({ HOME: '/home/alex', XDG_CONFIG_HOME: '/cfg' }), '/cfg/vfio-hookd/agent.toml');
  t.is(defaultAgentConfigPath({ HOME: '/home/alex', XDG_CONFIG_HOME: 'relative' }), '/home/alex/.config/vfio-hookd/agent.toml');
  const dir = await tempDir(t, 'vfio-hookd-agent-config-');
  t.is((await loadAgentConfig(path.join(dir, 'agent.toml'))).vms.size, 0);
});
