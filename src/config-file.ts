/**
 * `--config <file>`: the run options from a JSON or YAML file, for running several instances
 * under systemd. Keys are the long option names, in kebab-case or camelCase (`dstport`,
 * `max-address` / `maxAddress`, `remote: [..]`); options given on the command line win.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { ConfigError, ErrorCode } from './errors.js';

const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Loads `file` into `cmd`'s option values where the command line left the default. */
export function loadConfigFile(file: string, cmd: Command): void {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: cannot read ${file}: ${(e as Error).message}`);
  }
  let data: unknown;
  try {
    data = /\.json$/i.test(file) ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: ${file} is not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: ${file} must hold an object of options, e.g. { "vni": 1, "remote": ["198.51.100.2"] }`);
  }
  const known = new Map(cmd.options.map((o) => [o.attributeName(), o]));
  for (const [rawKey, value] of Object.entries(data as Record<string, unknown>)) {
    const key = camel(rawKey === 'learning' ? 'learning' : rawKey);
    const opt = known.get(key);
    if (opt === undefined || key === 'config' || key === 'version') {
      throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: unknown option ${JSON.stringify(rawKey)} in ${file}; accepted: the long options of uvtep --help (e.g. vni, remote, dstport, name, address)`);
    }
    const source = cmd.getOptionValueSource(key);
    if (source === 'cli' || source === 'env') continue;
    const repeatable = ['remote', 'address', 'allowFrom'].includes(key);
    const v = repeatable && !Array.isArray(value) ? [value] : value;
    cmd.setOptionValueWithSource(key, Array.isArray(v) ? v.map(String) : typeof v === 'number' || typeof v === 'boolean' ? v : String(v), 'config');
  }
}
