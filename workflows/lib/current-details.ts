// The markdown a workflow keeps as its current details (setCurrentDetails): the Web UI's workflow
// page shows it without a query. Rendered from the same progress object the `progress` query
// answers, at the points it changes; workflow state only, so no command and no history event.
import type { ColdMigrationProgress, FleetProgress, MigrationProgress, ProvisionProgress } from '../definitions.js';
import { bytes, markdownList, seconds } from '../../domain/summaries.js';

/** LiveMigrate: stage, round, remaining, dirty rate, expected downtime, ETA, verdict, last decision. */
export function migrationDetails(p: MigrationProgress, nowMs: number, startedAtMs: number): string {
  const g = p.progress;
  const last = p.decisions[p.decisions.length - 1];
  const rows: Array<[string, string]> = [
    ['state', p.state + (p.awaitingApproval ? ' — awaiting switchover approval' : '')],
    ['stage', `${p.stageIndex} ${p.stage}`],
    ['hosts', `${p.sourceHostId || '?'} → ${p.targetHostId ?? '(planner picks)'}`],
    ['round', String(g.round)],
    // sent counts re-sent dirty pages too, so it can pass the memory size
    ['sent', `${bytes(g.transferredBytes)} (memory ${bytes(g.totalBytes)}, ${Math.round(g.percent)} % done)`],
    ['remaining', bytes(g.remainingBytes)],
    ['dirty rate', `${bytes(g.dirtyRateBytesPerSec)}/s`],
    ['transfer rate', `${bytes(g.transferRateBytesPerSec)}/s`],
    ['expected downtime', `${Math.round(g.expectedDowntimeMs)} ms (limit ${g.downtimeLimitMs} ms)`],
    ['ETA', g.etaSeconds !== undefined ? seconds(g.etaSeconds) : '—'],
    ['verdict', g.verdict],
    ['throttle', `${g.throttlePct} %`],
    ['last decision', last ? `${last.action}: ${last.reason}` : '—'],
    ['elapsed', seconds((nowMs - startedAtMs) / 1000)],
  ];
  if (p.queue) rows.push(['queued', p.queue.reason]);
  if (p.disks) rows.push(['disks', `${bytes(p.disks.copiedBytes)} of ${bytes(p.disks.totalBytes)}${p.disks.inSync ? ', in sync' : ''}`]);
  if (p.downtimeMs !== undefined) rows.push(['downtime', `${p.downtimeMs} ms`]);
  if (p.error) rows.push(['error', p.error]);
  if (p.compensations.length) rows.push(['compensations', p.compensations.map((c) => `${c.name} ${c.ok ? 'ok' : 'FAILED'}`).join(', ')]);
  return markdownList(`live migration of ${p.vmId}`, rows);
}

/** ProvisionVm: the step and the placement decision with the rejected hosts and why. */
export function provisionDetails(p: ProvisionProgress): string {
  const rows: Array<[string, string]> = [
    ['state', p.state],
    ['step', p.stepName === 'done' ? 'done' : `${p.step} ${p.stepName}`],
  ];
  if (p.placement?.chosen) rows.push(['placed on', `${p.placement.chosen}${p.datastoreId ? ` (datastore ${p.datastoreId})` : ''}`]);
  for (const r of p.placement?.rejected ?? []) rows.push([`rejected ${r.hostId}`, r.reasons.join('; ')]);
  if (p.ip) rows.push(['IP', p.ip]);
  if (p.error) rows.push(['error', p.error]);
  if (p.compensations.length) rows.push(['compensations', p.compensations.map((c) => `${c.name} ${c.ok ? 'ok' : 'FAILED'}`).join(', ')]);
  return markdownList(`provisioning ${p.name} (${p.vmId})`, rows);
}

/** EvacuateHost / Rebalance: counts, ETA, the VMs in flight. */
export function fleetDetails(p: FleetProgress, nowMs: number): string {
  const c = p.counts;
  const inFlight = p.vms.filter((v) => v.state === 'in-flight');
  const rows: Array<[string, string]> = [
    ['state', p.state],
    ['moved', `${c.moved} of ${p.vms.length}`],
    ['in flight', inFlight.length ? inFlight.map((v) => `${v.vmName} ${v.from} → ${v.to ?? '?'}`).join(', ') : '0'],
    ['waiting', String(c.waiting)],
    ['failed / left / cancelled', `${c.failed} / ${c.left} / ${c.cancelled}`],
    ['ETA', p.etaMs !== undefined ? `in ${seconds(Math.max(0, p.etaMs - nowMs) / 1000)}` : p.predictedMakespanMs !== undefined ? `predicted ${seconds(p.predictedMakespanMs / 1000)}` : '—'],
  ];
  if (p.imbalanceBefore !== undefined) rows.push(['imbalance', `${p.imbalanceBefore.toFixed(3)}${p.imbalanceAfter !== undefined ? ` → ${p.imbalanceAfter.toFixed(3)}` : ''}`]);
  for (const v of p.vms.filter((x) => x.state === 'failed' || x.state === 'left')) rows.push([`${v.state} ${v.vmName}`, v.reason ?? '']);
  if (p.error) rows.push(['error', p.error]);
  return markdownList(`${p.kind === 'evacuation' ? 'evacuation of' : 'rebalance of'} ${p.subject}`, rows);
}

/** ColdMigrate: stage, hosts, the copy (bytes, files, rate, ETA, resumes), downtime, last decision. */
export function coldDetails(p: ColdMigrationProgress, nowMs: number, startedAtMs: number): string {
  const g = p.progress;
  const last = p.decisions[p.decisions.length - 1];
  const rows: Array<[string, string]> = [
    ['state', p.state],
    ['stage', p.stage === 'rollback' || p.stage === 'done' || p.stage === 'queued' ? p.stage : `${p.stageIndex} ${p.stage}`],
    ['hosts', `${p.sourceHostId || '?'} → ${p.targetHostId ?? '(planner picks)'}${p.targetDatastoreId ? ` (datastore ${p.targetDatastoreId})` : ''}`],
    ['copied', `${bytes(g.transferredBytes)} of ${bytes(g.totalBytes)} (${Math.round(g.percent)} %), ${g.filesDone}/${g.filesTotal} files${g.file ? `, now ${g.file}` : ''}`],
    ['copy rate', `${bytes(g.transferRateBytesPerSec)}/s`],
    ['ETA', g.etaSeconds !== undefined ? seconds(g.etaSeconds) : '—'],
    ['last decision', last ? `${last.action}: ${last.reason}` : '—'],
    ['elapsed', seconds((nowMs - startedAtMs) / 1000)],
  ];
  if (g.resumedFromBytes > 0) rows.push(['resumed', `from ${bytes(g.resumedFromBytes)} (checkpoint after a crash)`]);
  if (p.backingDecision) rows.push(['backing chain', p.backingDecision]);
  if (p.downtimeMs !== undefined) rows.push(['downtime', seconds(p.downtimeMs / 1000)]);
  if (p.error) rows.push(['error', p.error]);
  if (p.compensations.length) rows.push(['compensations', p.compensations.map((c) => `${c.name} ${c.ok ? 'ok' : 'FAILED'}`).join(', ')]);
  return markdownList(`cold migration of ${p.vmId}`, rows);
}

/** `stage 2 pre-copy`, `queued`, `rollback`: what a LiveMigrate activity belongs to, for its summary */
export function phaseOf(p: MigrationProgress): string {
  if (p.stage === 'rollback' || p.stage === 'queued' || p.stage === 'done') return p.stage;
  return `stage ${p.stageIndex} ${p.stage}`;
}
