/**
 * `--config <file>`: the run options from a JSON or YAML file, for running uvtep under systemd.
 * Keys are the long option names, in kebab-case or camelCase (`dstport`, `max-address` /
 * `maxAddress`, `remote: [..]`); options given on the command line win. A `vteps:` list hosts
 * several VTEPs in the one process: each entry holds the per-VTEP keys, and the top-level keys
 * are the defaults of every entry.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Command, Option } from 'commander';
import { ConfigError, ErrorCode } from '../errors.js';
import { PROCESS_OPTIONS, REPEATABLE } from './options.js';

const camel = (k: string) => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** An option that takes no value (`--persist`, `--no-learning`). */
const flagOnly = (o: Option): boolean => !o.required && !o.optional;

/**
 * A value from the file through the same path as the command line: the option's parser and its
 * choices, so a bad value gets the same message and exit code as the flag would.
 */
function checked(opt: Option, key: string, value: unknown, file: string): unknown {
  if (flagOnly(opt)) {
    if (typeof value !== 'boolean') throw new ConfigError(ErrorCode.InvalidOption, key, `${key}: expected true or false in ${file}, got ${JSON.stringify(value)}`);
    return value;
  }
  const values = Array.isArray(value) ? value : [value];
  // the repeatable options take a list (or one value) in the file
  if (REPEATABLE.has(key) && opt.parseArg === undefined) return values.map(String);
  if (values.length > 1 && !opt.variadic && opt.parseArg === undefined) {
    throw new ConfigError(ErrorCode.InvalidOption, key, `${key}: expected one value in ${file}, got a list`);
  }
  let out: unknown = opt.defaultValue === undefined || !Array.isArray(opt.defaultValue) ? undefined : [];
  for (const raw of values) {
    if (raw === null || typeof raw === 'object') throw new ConfigError(ErrorCode.InvalidOption, key, `${key}: expected a value in ${file}, got ${JSON.stringify(raw)}`);
    const text = String(raw);
    if (opt.argChoices !== undefined && !opt.argChoices.includes(text)) {
      throw new ConfigError(ErrorCode.InvalidOption, key, `${key}: expected one of ${opt.argChoices.join(', ')}, got ${JSON.stringify(text)}`);
    }
    out = opt.parseArg !== undefined ? opt.parseArg(text, out) : typeof raw === 'number' ? raw : text;
  }
  return out;
}

/**
 * Option values from an object of long option names (a config file's, a `vteps:` entry's, a
 * `vtep.add` request's), each through its option's parser and choices: attribute name -> value.
 */
export function optionValues(data: Record<string, unknown>, cmd: Command, where: string, opts: { perVtep?: boolean } = {}): Map<string, unknown> {
  // an attribute may have two options (`--control <path>` and `--no-control`): a boolean value
  // goes to the boolean one, anything else to the one that takes a value
  const known = new Map<string, Option[]>();
  for (const o of cmd.options) known.set(o.attributeName(), [...(known.get(o.attributeName()) ?? []), o]);
  const out = new Map<string, unknown>();
  for (const [rawKey, value] of Object.entries(data)) {
    const key = camel(rawKey);
    if (opts.perVtep === true && PROCESS_OPTIONS.has(key)) {
      throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: ${JSON.stringify(rawKey)} in ${where} is an option of the whole process, not of one VTEP; set it at the top level`);
    }
    const os = known.get(key);
    const opt = os === undefined ? undefined : (os.find((o) => flagOnly(o) === (typeof value === 'boolean')) ?? os[0]);
    if (opt === undefined || key === 'config' || key === 'version') {
      throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: unknown option ${JSON.stringify(rawKey)} in ${where}; accepted: the long options of uvtep --help (e.g. vni, remote, dstport, name, address)`);
    }
    out.set(key, checked(opt, key, value, where));
  }
  return out;
}

/**
 * Loads `file` into `cmd`'s option values where the command line left the default. Returns the
 * `vteps:` entries (checked option values by attribute name), or undefined when the file has none.
 */
export function loadConfigFile(file: string, cmd: Command): Array<Record<string, unknown>> | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: cannot read ${file}: ${(e as Error).message}`);
  }
  let data: unknown;
  const json = /\.json$/i.test(file);
  try {
    // yaml is loaded for a YAML file only (memory: docs/benchmarks.md)
    data = json ? JSON.parse(text) : (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text);
  } catch (e) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: ${file} is not valid ${json ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: ${file} must hold an object of options, e.g. { "vni": 1, "remote": ["198.51.100.2"] }`);
  }
  const { vteps, ...top } = data as Record<string, unknown>;
  for (const [key, value] of optionValues(top, cmd, file)) {
    const source = cmd.getOptionValueSource(key);
    if (source === 'cli' || source === 'env') continue;
    cmd.setOptionValueWithSource(key, value, 'config');
  }
  if (vteps === undefined) return undefined;
  if (!Array.isArray(vteps) || vteps.length === 0 || vteps.some((v) => v === null || typeof v !== 'object' || Array.isArray(v))) {
    throw new ConfigError(ErrorCode.InvalidOption, 'config', `config: vteps in ${file} must be a list of objects, one per VTEP, e.g. - {vni: 10, name: vx10, remote: [198.51.100.2]}`);
  }
  return vteps.map((v: Record<string, unknown>, i) => Object.fromEntries(optionValues(v, cmd, `vteps[${i}] of ${file}`, { perVtep: true })));
}
