/**
 * The `uvtep` command: options mirror `ip link add ... type vxlan` and `brctl addif`.
 * With run.ts, the only module that calls process.exit or installs signal handlers.
 *
 * Exit codes: 0 clean stop; 1 system error (not root, no /dev/net/tun, TAP removed...);
 * 2 bad option (the message names the option and what it accepts).
 */
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../errors.js';
import { runDemo } from '../lab/demo.js';
import * as ops from './ops.js';
import { configMessage, EXIT_OK, EXIT_USAGE, usageError } from './ops.js';
import { loadConfigFile } from './config-file.js';
import { commanderOptions, type RunOpts } from './options.js';
import { run } from './run.js';

/** What the main command does with its checked options: run (the default), or hand them over (SIGHUP). */
interface RunHook {
  run: (o: RunOpts, entries: Array<Record<string, unknown>> | undefined) => Promise<number>;
  /** A bad option or config file: the message (without `uvtep: error: `); the default prints it and exits 2. */
  usage: (message: string) => number;
}

/** The command line the process started with (SIGHUP reads it and the config file again). */
let startArgv: string[] = [];

export function buildProgram(hook: RunHook = { run: (o, e) => run(o, e, reread), usage: usageError }): Command {
  const program = new Command('uvtep');
  program
    .description(
      'Userspace VXLAN tunnel endpoint (RFC 7348): a TAP device whose frames travel to remote VTEPs in UDP.\n' +
        'Interoperates with the Linux kernel VTEP (ip link add ... type vxlan). One process hosts any\n' +
        'number of VTEPs (a vteps: list in --config, or uvtep vtep add); VTEPs on one UDP port share its socket.\n' +
        'VTEPs can find each other through etcd (--etcd) instead of --remote lists, or join a flannel network (--flannel).\n\n' +
        'Example: uvtep --vni 1 --remote 172.31.0.107 --address 10.0.0.106/24',
    )
    .version('0.1.0')
    .showHelpAfterError('(run uvtep --help for every option)');
  for (const o of commanderOptions('all', true)) program.addOption(o);
  program
    .enablePositionalOptions()
    .action(async (opts: RunOpts, cmd: Command) => {
      let entries: Array<Record<string, unknown>> | undefined;
      if (opts.config !== undefined) {
        try {
          entries = loadConfigFile(opts.config, cmd);
        } catch (e) {
          if (e instanceof ConfigError) {
            process.exitCode = hook.usage(configMessage(e));
            return;
          }
          throw e;
        }
        opts = cmd.opts<RunOpts>();
        if (entries !== undefined) {
          const identity = (['vni', 'name'] as const).filter((k) => cmd.getOptionValueSource(k) === 'cli');
          if (identity.length > 0) {
            process.exitCode = hook.usage(`option --${identity[0]}: ${opts.config} has a vteps: list; add VTEPs to it, or at run time with uvtep vtep add`);
            return;
          }
        }
      }
      process.exitCode = await hook.run(opts, entries);
    });

  const io = { out: (t: string) => process.stdout.write(t + '\n'), err: (t: string) => process.stderr.write(t + '\n') };
  const target = (o: { name?: string; socket?: string }) => ({ name: o.name, socket: o.socket });
  const fdb = program.command('fdb').description('show or change the FDB of a running uvtep (like bridge fdb on a vxlan device)');
  const instanceOpts = (c: Command) =>
    c.option('--name <tap>', 'the VTEP, by TAP name (default: the only one running)').option('--socket <path>', 'the uvtep process, by control socket path');
  instanceOpts(fdb.command('show').description('list the entries: MAC, remote, port, VNI, static/dynamic, age').option('--json', 'JSON output')).action(
    async (o: { name?: string; socket?: string; json?: boolean }) => {
      process.exitCode = await ops.fdbShow(io, target(o), o.json ?? false);
    },
  );
  for (const op of ['add', 'append', 'replace', 'del'] as const) {
    const help = {
      add: 'create an entry (fails if the MAC exists): uvtep fdb add <mac> dst <ip> [port <p>] [static|dynamic]',
      append: 'add a destination; uvtep fdb append 00:00:00:00:00:00 dst <ip> adds a flood destination',
      replace: 'create or replace an entry',
      del: 'delete an entry, or one destination of it: uvtep fdb del <mac> [dst <ip>] [port <p>]',
    }[op];
    instanceOpts(fdb.command(`${op} <mac> [words...]`).description(help)).action(async (mac: string, words: string[], o: { name?: string; socket?: string }) => {
      process.exitCode = await ops.fdbChange(io, target(o), op, mac, words ?? []);
    });
  }
  instanceOpts(fdb.command('flush').description('remove every entry, or with --dynamic only learned ones').option('--dynamic', 'only dynamic (learned) entries')).action(
    async (o: { name?: string; socket?: string; dynamic?: boolean }) => {
      process.exitCode = await ops.fdbFlush(io, target(o), o.dynamic ?? false);
    },
  );
  instanceOpts(
    program
      .command('stats')
      .description('counters of a running uvtep: rx/tx frames and bytes, drops by reason, flood copies, FDB size')
      .option('--json', 'JSON output')
      .option('--watch [seconds]', 'refresh every interval (default 1 s) with rates per second')
      .option('--count <n>', 'with --watch: stop after n refreshes'),
  ).action(async (o: { name?: string; socket?: string; json?: boolean; watch?: string | boolean; count?: string }) => {
    const watch = o.watch === undefined ? undefined : o.watch === true ? 1 : Number(o.watch);
    const count = o.count === undefined ? undefined : Number(o.count);
    if ((watch !== undefined && !(watch > 0)) || (count !== undefined && !(Number.isInteger(count) && count > 0))) {
      process.exitCode = usageError('option --watch takes seconds > 0 and --count a whole number > 0');
      return;
    }
    process.exitCode = await ops.stats({ ...io, tty: process.stdout.isTTY === true }, target(o), { json: o.json ?? false, watch, count });
  });
  program
    .command('list')
    .description('the VTEPs of every uvtep running in this network namespace: TAP, process, VNI, UDP endpoint, remotes')
    .option('--json', 'JSON output')
    .action(async (o: { json?: boolean }) => {
      process.exitCode = await ops.list(io, o.json ?? false);
    });

  const vtep = program.command('vtep').description('add or remove VTEPs of a running uvtep (as ip link add/del does for kernel devices)');
  const add = vtep
    .command('add')
    .description('add a VTEP to the running uvtep of this network namespace: uvtep vtep add --vni 30 --name vx30 --remote 198.51.100.2 --address 10.30.0.1/24')
    .option('--control <path>', 'the uvtep to add it to, by control socket path (default: the only one running here)')
    .option('--socket <path>', 'the same as --control');
  for (const o of commanderOptions('vtep', false)) add.addOption(o);
  add.action(async (o: Record<string, unknown>, cmd: Command) => {
    const options: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) if (k !== 'socket' && k !== 'control' && cmd.getOptionValueSource(k) === 'cli') options[k] = v;
    if (options.vni === undefined) {
      process.exitCode = usageError('option --vni <n> is required: the VXLAN Network Identifier, 0-16777215');
      return;
    }
    process.exitCode = await ops.vtepAdd(io, { socket: (o.control ?? o.socket) as string | undefined }, options);
  });
  vtep
    .command('del <name>')
    .description('stop a VTEP of a running uvtep and remove its TAP (unless it was started with --persist)')
    .option('--control <path>', 'the uvtep, by control socket path (default: the one hosting <name>)')
    .option('--socket <path>', 'the same as --control')
    .action(async (name: string, o: { socket?: string; control?: string }) => {
      process.exitCode = await ops.vtepDel(io, { socket: o.control ?? o.socket }, name);
    });

  program
    .command('demo')
    .description('build two namespace hosts on this machine, run the seed experiments over uvtep, show the results, remove everything')
    .option('--keep', 'leave the namespaces in place for inspection (remove them with: uvtep demo --cleanup)')
    .option('--cleanup', 'only remove what an earlier demo left behind')
    .action(async (o: { keep?: boolean; cleanup?: boolean }) => {
      // Ctrl-C or SIGTERM: the demo removes its hosts and resolves with 130
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        process.exitCode = await runDemo({ keep: o.keep ?? false, cleanupOnly: o.cleanup ?? false, out: process.stdout, signal: stop.signal });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  return program;
}


/** The command line and the config file read again, as at start; throws with the message of a bad option. */
async function reread(): Promise<{ o: RunOpts; entries: Array<Record<string, unknown>> | undefined }> {
  let got: { o: RunOpts; entries: Array<Record<string, unknown>> | undefined } | undefined;
  let bad: string | undefined;
  const p = buildProgram({
    run: (o, entries) => {
      got = { o, entries };
      return Promise.resolve(EXIT_OK);
    },
    usage: (m) => {
      bad = m;
      return EXIT_USAGE;
    },
  });
  const code = process.exitCode;
  p.exitOverride();
  p.configureOutput({ writeErr: (t) => (bad ??= t.trim()), writeOut: () => undefined });
  try {
    await p.parseAsync(startArgv);
  } catch (e) {
    bad ??= (e as Error).message;
  } finally {
    process.exitCode = code;
  }
  if (got === undefined) throw new Error(bad ?? 'the options could not be read');
  return got;
}

export async function main(argv: string[]): Promise<void> {
  startArgv = argv;
  const program = buildProgram();
  program.exitOverride();
  program.configureOutput({
    outputError: (str, write) => write(str.startsWith('error:') ? `uvtep: ${str}` : str),
  });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
      return;
    }
    throw e;
  }
}


