#!/usr/bin/env node
// The etcd control plane at scale: N members (library Vteps on loopback addresses, each with its
// own EtcdAgent: its own etcd client, lease and watch) join one etcd (started here, on a free
// 127.0.0.1 port, temporary data, ended by PID).
//
//   join convergence   a newcomer joins; the time until every member has it in its flood list
//                      (p50/p99), beside the same run's raw etcd put -> watch event time at N
//                      watchers (the floor any etcd-based control plane stands on)
//   requests per join  etcd requests the newcomer makes (the others only receive watch events)
//   memory per member  RSS and heap of N agents with their state, divided by N (the VTEPs, made
//                      first, are not counted)
//   churn              members leave (half revoke, half vanish as a crash would) and join again
//                      continuously; the longest any member holds a departed one, against the TTL
//
// Usage: npm run bench:etcd -- [--members 200] [--joins 40] [--churn-s 30] [--ttl 5] [--json FILE] [--docs]
// Runs alone (2 cores: never beside the test suite or another benchmark).
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createVtep, MemoryDevice } from '../../dist/index.js';
import { EtcdAgent } from '../../dist/etcd.js';
import { EtcdServer } from '../../dist/lab/etcd.js';
import { Etcd3 } from 'etcd3';
import { writeSection } from '../docs.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const MEMBERS = Number(arg('members', 200));
const JOINS = Number(arg('joins', 40));
const CHURN_S = Number(arg('churn-s', 30));
const TTL = Number(arg('ttl', 5));
const JSON_OUT = arg('json', 'bench/results/etcd.json');
const DOCS = process.argv.includes('--docs');
const PREFIX = '/uvt-bench';
const VNI = 100;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const gc = () => globalThis.gc?.();
const mem = () => {
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed };
};
/** Loopback address of member i (127.1.x.y). */
const addr = (i) => `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;

const etcd = await EtcdServer.start();
const cleanup = async () => {
  await etcd.stop();
};
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

try {
  // --- the VTEPs (not counted in memory per member) ---
  const total = MEMBERS + JOINS;
  const vteps = [];
  for (let i = 0; i < total; i++) {
    const v = createVtep({ vni: VNI, local: addr(i), listenPort: 0, frameDevice: new MemoryDevice({ batchSize: 1, maxFrame: 2048 }), transport: 'dgram' });
    await v.start();
    vteps.push(v);
  }
  const ports = vteps.map((v) => v.address().port);
  const at = (i) => ({ address: addr(i), port: ports[i] });
  const keys = vteps.map((_, i) => `${addr(i)}|${ports[i]}`);
  const has = (j, i) => {
    const k = keys[i];
    for (const r of vteps[j].fdb.flood) if (r.key === k) return true;
    return false;
  };

  const agents = new Array(total).fill(undefined);
  const newAgent = (i) => new EtcdAgent({ endpoints: [etcd.url], prefix: PREFIX, ttlS: TTL, node: `n${i}` });
  const join = async (i) => {
    const a = newAgent(i);
    agents[i] = a;
    await a.start();
    await a.join(vteps[i], { advertise: at(i) });
    return a;
  };

  // --- N members ---
  const before = mem();
  const t0 = performance.now();
  for (let i = 0; i < MEMBERS; i += 20) await Promise.all(Array.from({ length: Math.min(20, MEMBERS - i) }, (_, k) => join(i + k)));
  while (![...Array(MEMBERS).keys()].every((j) => vteps[j].fdb.flood.length === MEMBERS - 1)) await sleep(5);
  const meshS = (performance.now() - t0) / 1000;
  await sleep(500);
  const after = mem();
  const perMember = { rssKiB: (after.rss - before.rss) / 1024 / MEMBERS, heapKiB: (after.heap - before.heap) / 1024 / MEMBERS };
  console.log(`${MEMBERS} members: full mesh in ${meshS.toFixed(1)} s; memory per member ${perMember.rssKiB.toFixed(0)} KiB RSS, ${perMember.heapKiB.toFixed(0)} KiB heap`);

  // --- raw etcd: put -> watch event at N watchers (same run, same machine) ---
  const raw = [];
  {
    const clients = [];
    const watchers = [];
    let seen = 0;
    let target = '';
    let done = () => undefined;
    for (let i = 0; i < MEMBERS; i++) {
      const c = new Etcd3({ hosts: etcd.url });
      clients.push(c);
      const w = await c.watch().prefix('/uvt-raw/').create();
      w.on('put', (kv) => {
        if (kv.key.toString() === target && ++seen === MEMBERS) done();
      });
      watchers.push(w);
    }
    const writer = new Etcd3({ hosts: etcd.url });
    for (let j = 0; j < JOINS; j++) {
      seen = 0;
      target = `/uvt-raw/k${j}`;
      const all = new Promise((r) => (done = r));
      const s = performance.now();
      await writer.put(target).value('x');
      await all;
      raw.push(performance.now() - s);
    }
    for (const w of watchers) await w.cancel();
    for (const c of clients) c.close();
    writer.close();
  }

  // --- joins: one newcomer at a time ---
  const conv = [];
  const reqs = [];
  for (let n = 0; n < JOINS; n++) {
    const i = MEMBERS + n;
    const others = [...Array(i).keys()].filter((j) => agents[j] !== undefined);
    const s = performance.now();
    const a = await join(i);
    const waiting = new Set(others);
    while (waiting.size > 0) {
      for (const j of waiting) if (has(j, i)) waiting.delete(j);
      if (waiting.size > 0) await new Promise((r) => setImmediate(r));
    }
    conv.push(performance.now() - s);
    reqs.push(a.stats.requests);
  }
  const joinRes = {
    p50Ms: pct(conv, 50),
    p99Ms: pct(conv, 99),
    rawP50Ms: pct(raw, 50),
    rawP99Ms: pct(raw, 99),
    requestsPerJoin: reqs.reduce((x, y) => x + y, 0) / reqs.length,
  };
  console.log(`join convergence at ${MEMBERS}+ members: p50 ${joinRes.p50Ms.toFixed(1)} ms, p99 ${joinRes.p99Ms.toFixed(1)} ms (raw etcd put->watch at ${MEMBERS} watchers: p50 ${joinRes.rawP50Ms.toFixed(1)} ms, p99 ${joinRes.rawP99Ms.toFixed(1)} ms); ${joinRes.requestsPerJoin.toFixed(1)} etcd requests per join`);

  // --- churn ---
  const live = new Set([...Array(total).keys()]);
  const departed = new Map(); // i -> { at, how }
  let maxStaleRevoked = 0;
  let maxStaleCrashed = 0;
  let leaves = 0;
  let rejoins = 0;
  const check = setInterval(() => {
    const now = performance.now();
    for (const [i, d] of departed) {
      let stale = false;
      for (const j of live) if (has(j, i)) {
        stale = true;
        break;
      }
      const age = (now - d.at) / 1000;
      if (stale) {
        if (d.how === 'revoke') maxStaleRevoked = Math.max(maxStaleRevoked, age);
        else maxStaleCrashed = Math.max(maxStaleCrashed, age);
      } else d.cleared = true;
    }
  }, 100);
  const end = performance.now() + CHURN_S * 1000;
  let flip = 0;
  while (performance.now() < end) {
    // one leaves (alternately revoking and vanishing)
    const pick = [...live][Math.floor(Math.random() * live.size)];
    const how = flip++ % 2 === 0 ? 'revoke' : 'crash';
    live.delete(pick);
    departed.set(pick, { at: performance.now(), how, cleared: false });
    await agents[pick].close({ revoke: how === 'revoke' });
    agents[pick] = undefined;
    leaves++;
    // one that left earlier and is no longer held by anyone rejoins
    for (const [i, d] of departed) {
      if (!d.cleared) continue;
      departed.delete(i);
      await join(i);
      live.add(i);
      rejoins++;
      break;
    }
    await sleep(200);
  }
  // let the last departures expire, then the final check
  const settle = performance.now() + (TTL + 3) * 1000;
  while (performance.now() < settle && [...departed.values()].some((d) => !d.cleared)) await sleep(100);
  clearInterval(check);
  const stuck = [...departed.values()].filter((d) => !d.cleared).length;
  const churn = { seconds: CHURN_S, leaves, rejoins, maxStaleRevokedS: maxStaleRevoked, maxStaleCrashedS: maxStaleCrashed, ttlS: TTL, stuck };
  console.log(`churn ${CHURN_S} s: ${leaves} leaves, ${rejoins} rejoins; longest stale: revoked ${maxStaleRevoked.toFixed(2)} s, crashed ${maxStaleCrashed.toFixed(2)} s (TTL ${TTL} s); never cleared: ${stuck}`);

  const result = { date: new Date().toISOString(), members: MEMBERS, joins: JOINS, ttlS: TTL, meshS, perMember, join: joinRes, churn };
  writeFileSync(JSON_OUT, JSON.stringify(result, null, 2) + '\n');
  if (DOCS) {
    const md = [
      `Run ${result.date.slice(0, 10)}: ${MEMBERS} members (library Vteps on 127.1.x.y, each with its own etcd client, lease and watch) in one etcd 3.4 on this machine; \`npm run bench:etcd -- --docs\`.`,
      '',
      '| measure | result | yardstick (same run) |',
      '|---|---|---|',
      `| join convergence p50 (newcomer in every member's flood list) | ${joinRes.p50Ms.toFixed(1)} ms | raw etcd put -> watch event at ${MEMBERS} watchers: ${joinRes.rawP50Ms.toFixed(1)} ms (${(joinRes.p50Ms / joinRes.rawP50Ms).toFixed(1)}x) |`,
      `| join convergence p99 | ${joinRes.p99Ms.toFixed(1)} ms | raw p99 ${joinRes.rawP99Ms.toFixed(1)} ms (${(joinRes.p99Ms / joinRes.rawP99Ms).toFixed(1)}x) |`,
      `| etcd requests per join | ${joinRes.requestsPerJoin.toFixed(1)} | the others make none (watch events only) |`,
      `| memory per member (agent, client, lease, watch, state) | ${perMember.rssKiB.toFixed(0)} KiB RSS, ${perMember.heapKiB.toFixed(0)} KiB heap | |`,
      `| full mesh of ${MEMBERS} from nothing (joins 20 at a time) | ${meshS.toFixed(1)} s | |`,
      `| churn: ${churn.leaves} leaves, ${churn.rejoins} rejoins in ${CHURN_S} s; longest stale entry, revoked leave | ${churn.maxStaleRevokedS.toFixed(2)} s | TTL ${TTL} s |`,
      `| churn: longest stale entry, crashed leave (lease not revoked) | ${churn.maxStaleCrashedS.toFixed(2)} s | TTL ${TTL} s (etcd expires leases within about a second past it) |`,
      `| departed members still held by someone at the end | ${stuck} | 0 |`,
      '',
    ].join('\n');
    writeSection('docs/benchmarks.md', 'etcd', md);
  }
  for (const a of agents) await a?.close();
  for (const v of vteps) await v.close();
} finally {
  await cleanup();
}
