// ferry templates ls | networks ls
import { listCommand, type Command } from '../command.js';
import { list, str } from '../output.js';

export const inventoryCommands: Command[] = [
  listCommand('templates', 'list templates', '/v1/templates', ['ID', 'NAME', 'OS', 'DISK GiB', 'MIN MEMORY MiB', 'OWNER', 'TAGS'], (t) => [
    str(t.id),
    str(t.name),
    str(t.os),
    str(t.diskGiB),
    str(t.minMemoryMiB),
    str(t.owner),
    list(t.tags),
  ]),
  listCommand('networks', 'list networks and their IP pools', '/v1/networks', ['ID', 'NAME', 'VLAN', 'CIDR', 'GATEWAY', 'POOLS'], (n) => [
    str(n.id),
    str(n.name),
    str(n.vlan),
    str(n.cidr),
    str(n.gateway),
    pools(n.pools),
  ]),
];

/** `10.0.0.10-10.0.0.209,...`, '-' for none. */
function pools(v: unknown): string {
  return Array.isArray(v) ? v.map((p: { start?: unknown; end?: unknown }) => `${str(p.start)}-${str(p.end)}`).join(',') || '-' : '-';
}
