// The kernel captures in ../shared/vectors/kernel-vxlan.json (datagrams sent by `ip link add type vxlan`).
// Note: the `outer.family` and `outer.src` fields of some entries mix in inner addresses (a tshark
// decoding artefact); the codec tests use only `vni`, `vxlanHeader` and `innerFrame`.
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';

export interface KernelPacket {
  capture: string;
  protocol: string;
  summary: string;
  vni: number;
  vxlanHeader: string;
  innerFrame: string;
  outer: { dstPort: number };
}

const candidates = [
  path.resolve(__dirname, '../../../shared/vectors/kernel-vxlan.json'),
  path.resolve(__dirname, '../fixtures/kernel-vxlan.json'),
];

export function kernelPackets(): KernelPacket[] {
  const file = candidates.find((f) => existsSync(f));
  if (file === undefined) throw new Error(`kernel vectors not found in ${candidates.join(' or ')}`);
  return (JSON.parse(readFileSync(file, 'utf8')) as { packets: KernelPacket[] }).packets;
}
