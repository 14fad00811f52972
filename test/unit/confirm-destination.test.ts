// Stage 4's precondition, confirmDestinationImage (activities/host.ts), against a scripted driver:
// the source said `completed` but the destination's QEMU is still loading the last device state
// (runstate inmigrate, VM state 'incoming') for a moment. That moment is waited for; it used to
// fail the migration at once, and the rollback after a completed transfer killed the only live
// copy of the guest (seen on the QEMU lab with the Linux guest). An image that is absent or
// broken still fails at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHostActivities } from '../../activities/host.js';
import type { VmPowerState } from '../../domain/hypervisor.js';

function driverWith(states: Array<VmPowerState | null>) {
  let reads = 0;
  const driver = {
    hostId: 'hb',
    async vmStatus(vmId: string) {
      const s = states[Math.min(reads++, states.length - 1)];
      return s === null ? null : { vmId, state: s, spec: { vmId, name: vmId, cpus: 1, memoryBytes: 64 << 20, disks: [] } };
    },
  };
  return { activities: createHostActivities({ driver: driver as never }), reads: () => reads };
}

test('an image still arriving (incoming) is waited for, then confirmed', async () => {
  const d = driverWith(['incoming', 'incoming', 'incoming', 'paused']);
  const vm = await d.activities.confirmDestinationImage({ vmId: 'vm-1' });
  assert.equal(vm.state, 'paused');
  assert.equal(d.reads(), 4);
});

test('an absent or crashed destination fails at once, naming the state', async () => {
  for (const [state, named] of [[null, 'absent'], ['crashed', 'crashed']] as const) {
    const d = driverWith([state]);
    const started = Date.now();
    await assert.rejects(d.activities.confirmDestinationImage({ vmId: 'vm-1' }), new RegExp(`holds no complete image of vm-1 \\(state ${named}\\)`));
    assert.equal(d.reads(), 1, 'no waiting for an image that will not come');
    assert.ok(Date.now() - started < 1000);
  }
});
