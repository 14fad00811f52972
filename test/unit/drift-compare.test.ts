// domain/drift.ts compareInventory: the kinds the sim and qemu tests do not reach on their own
// (wrong-host, stuck-paused), and what is never judged: VMs with an operation in flight, incoming
// containers, and everything on a host that did not answer.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compareInventory, inventoryStateOf, type HostReport, type InventoryVm } from '../../domain/drift.js';

const inv = (id: string, hostId: string | null, state = 'running'): InventoryVm => ({ id, name: id, state, hostId });
const kinds = (r: ReturnType<typeof compareInventory>) => r.findings.map((f) => `${f.id}@${f.hostId}`);

describe('compareInventory', () => {
  it('finds wrong-host, stuck-paused and an extra copy, and nothing for agreeing VMs', () => {
    const reports: HostReport[] = [
      { hostId: 'a', vms: [{ vmId: 'ok', state: 'running' }, { vmId: 'paused', state: 'paused' }, { vmId: 'twice', state: 'running' }, { vmId: 'off', state: 'defined' }] },
      { hostId: 'b', vms: [{ vmId: 'moved', state: 'running' }, { vmId: 'twice', state: 'paused' }] },
    ];
    const r = compareInventory({ inventory: [inv('ok', 'a'), inv('paused', 'a'), inv('moved', 'a'), inv('twice', 'a'), inv('off', 'a', 'stopped')], reports, busyVmIds: [] });
    assert.deepEqual(kinds(r), ['stuck-paused-paused@a', 'wrong-host-moved@b', 'wrong-host-twice@b']);
    assert.equal(r.findings.find((f) => f.kind === 'wrong-host' && f.vmId === 'twice')!.observed.alsoOnHome, true);
    assert.deepEqual(r.findings.find((f) => f.vmId === 'moved')!.expected, { hostId: 'a', state: 'running' });
    assert.equal(r.vmsSeen, 6);
  });

  it('skips busy VMs and incoming containers; an unknown incoming container alone is not reported', () => {
    const reports: HostReport[] = [
      { hostId: 'a', vms: [{ vmId: 'migrating', state: 'paused' }, { vmId: 'leftover', state: 'incoming' }] },
      { hostId: 'b', vms: [{ vmId: 'migrating', state: 'incoming' }] },
    ];
    const r = compareInventory({ inventory: [inv('migrating', 'a'), inv('gone-busy', 'a')], reports, busyVmIds: ['migrating', 'gone-busy'] });
    assert.deepEqual(r.findings, []);
    assert.deepEqual(r.skippedVmIds, ['gone-busy', 'migrating']);
  });

  it('judges nothing on a host that did not answer', () => {
    const r = compareInventory({ inventory: [inv('on-b', 'b'), inv('on-a', 'a')], reports: [{ hostId: 'a', vms: [] }], busyVmIds: [] });
    assert.deepEqual(kinds(r), ['missing-vm-on-a@a']);
  });

  it('maps hypervisor power states onto inventory states', () => {
    assert.deepEqual(['running', 'paused', 'stopped', 'defined', 'crashed', 'postmigrate'].map(inventoryStateOf), ['running', 'paused', 'stopped', 'stopped', 'stopped', 'stopped']);
  });
});
