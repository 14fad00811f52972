// Zod schemas of every request body, path parameter and query string (and the main answers),
// used by fastify-type-provider-zod for validation and for the OpenAPI document. Bodies are
// strict: an unknown field (a typo such as `memoryMb`) is a 400 naming it, not silently ignored.
import { z } from 'zod';
import { SAFE_NAME } from '../../domain/hypervisor.js';
import { VM_STATES, OPERATION_KINDS, OPERATION_STATES } from '../../db/entities.js';
import { POLICY_NAMES } from '../../domain/policies.js';
import { pageQuery } from '../pagination.js';
import { FAULT_KINDS, FAULT_STEPS } from '../../domain/faults.js';

export const VM_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const NAME_RULE = "lowercase letters, digits and '-', 1-63 characters, starting and ending with a letter or digit";

/** Ids and names that may reach task queues, file names or argv. */
export const safeId = (what: string) => z.string().regex(SAFE_NAME, `${what} must be ${NAME_RULE}`);
/** A free-form identifier reference (id or name) looked up in the database; never reaches argv. */
const ref = z.string().min(1).max(128);
/** A VM or host tag (the same rule wherever a tag is given). */
export const tag = z.string().min(1).max(63).regex(/^[A-Za-z0-9][A-Za-z0-9_.:=\/-]*$/, 'tags are letters, digits and _ . : = / -');
/** A host path handed to the hypervisor host: absolute, no `..`, no control characters. */
export const hostPath = z
  .string()
  .min(2)
  .max(4096)
  .refine((p) => p.startsWith('/'), 'must be an absolute path')
  .refine((p) => !p.split('/').includes('..'), "must not contain '..'")
  // eslint-disable-next-line no-control-regex
  .refine((p) => !/[\u0000-\u001f\u007f]/.test(p), 'must not contain control characters');

export const idParams = z.object({ id: ref });

// ---------------------------------------------------------------- errors / common answers
export const ErrorSchema = z
  .object({
    error: z.string(),
    message: z.string(),
    fields: z.array(z.object({ field: z.string(), problem: z.string() })).optional(),
  })
  .loose();

/** success answers documented loosely (the DTO functions in api/queries.ts define them) */
export const AnyObject = z.object({}).loose();
export const ListOf = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), nextCursor: z.string().nullable() });
export const AnyList = ListOf(AnyObject);

export const Accepted = z
  .object({
    operationId: z.string(),
    workflowId: z.string(),
    webUiUrl: z.string(),
  })
  .loose();

// ---------------------------------------------------------------- hosts
export const HostCreate = z.strictObject({
  id: safeId('id').describe('host id; also names the host agent task queue ferry-host-<id>'),
  name: z.string().min(1).max(128).optional(),
  rack: z.string().max(64).optional(),
  cpuModel: z.string().min(1).max(128),
  cpuFeatures: z.array(z.string().min(1).max(64)).max(512).default([]),
  cpus: z.number().int().min(1).max(4096),
  memoryMiB: z.number().int().min(128).max(64 * 1024 * 1024),
  cpuOvercommit: z.number().min(1).max(64).optional(),
  memoryOvercommit: z.number().min(0.5).max(4).optional(),
  driver: z.enum(['sim', 'qemu', 'libvirt']).optional(),
  migrationAddress: z.string().max(255).optional(),
  tags: z.array(tag).max(64).default([]),
  maxOutgoingMigrations: z.number().int().min(1).max(64).optional(),
  maxIncomingMigrations: z.number().int().min(1).max(64).optional(),
});

export const MaintenanceBody = z.strictObject({ enabled: z.boolean() });

export const HostListQuery = z.object({ ...pageQuery, maintenance: z.enum(['true', 'false']).optional() });

// ---------------------------------------------------------------- VMs
const SOURCES = ['template', 'cloneOf', 'import', 'iso'] as const;

export const VmCreate = z
  .strictObject({
    name: z.string().regex(VM_NAME, `name must be ${NAME_RULE}`),
    cpus: z.number().int().min(1).max(1024),
    memoryMiB: z.number().int().min(64).max(16 * 1024 * 1024),
    diskGiB: z.number().int().min(1).max(64 * 1024),
    template: ref.optional().describe('template id or name'),
    cloneOf: ref.optional().describe('id or name of the VM to clone'),
    import: z.strictObject({ path: hostPath, format: z.enum(['vmdk', 'vhdx', 'raw', 'qcow2']) }).optional(),
    iso: hostPath.optional().describe('installer ISO on the host (manual install)'),
    network: ref.optional().describe('network id or name (default: the first network)'),
    hostId: ref.optional().describe('pin to this host (placement still checks capacity)'),
    hostname: safeId('hostname').optional(),
    userData: z.string().max(64 * 1024).optional().describe('cloud-init user-data'),
    sshKeys: z
      .array(z.string().min(1).max(16 * 1024).regex(/^(ssh|ecdsa|sk)-[^\n]+$/, 'must be one OpenSSH public key line'))
      .max(64)
      .optional(),
    tags: z.array(tag).max(64).optional(),
    linkedClone: z.boolean().optional().describe('template only: copy-on-write overlay instead of a full copy'),
    extraVolumesGiB: z.array(z.number().int().min(1).max(64 * 1024)).max(16).optional(),
    antiAffinityTag: tag.optional(),
    affinityTag: tag.optional(),
    weigher: z.enum(['spread', 'pack']).optional(),
    workload: z
      .strictObject({ dirtyRateBytesPerSec: z.number().min(0), writableWorkingSetBytes: z.number().min(0) })
      .optional()
      .describe('simulator only: the guest memory workload'),
  })
  .superRefine((b, ctx) => {
    const given = SOURCES.filter((s) => b[s] !== undefined);
    if (given.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['template'], message: `exactly one source is required: ${SOURCES.join(', ')}` });
    } else if (given.length > 1) {
      for (const s of given.slice(1)) {
        ctx.addIssue({ code: 'custom', path: [s], message: `only one source may be given, got ${given.join(' and ')}` });
      }
    }
    if (b.linkedClone !== undefined && b.template === undefined) {
      ctx.addIssue({ code: 'custom', path: ['linkedClone'], message: 'applies only with template' });
    }
  });
export type VmCreate = z.infer<typeof VmCreate>;

export const VmListQuery = z.object({
  ...pageQuery,
  state: z.enum(VM_STATES).optional(),
  hostId: ref.optional(),
});

export const StopBody = z
  .strictObject({
    force: z.boolean().optional().describe('force off after the graceful timeout'),
    timeoutMs: z.number().int().min(0).max(3_600_000).optional(),
  })
  .nullish();

export const DeleteQuery = z.object({ force: z.enum(['true', 'false']).optional() });

export const VmSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    state: z.enum(VM_STATES),
    hostId: z.string().nullable(),
    datastoreId: z.string().nullable(),
    networkId: z.string().nullable(),
    ip: z.string().nullable(),
    mac: z.string().nullable(),
    cpus: z.number(),
    memoryMiB: z.number(),
    diskGiB: z.number(),
    templateId: z.string().nullable(),
    tags: z.array(z.string()),
    error: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .loose();

export const TemplateFromVm = z.strictObject({
  name: safeId('name'),
  os: z.string().min(1).max(64).optional(),
  owner: z.string().min(1).max(128).optional(),
  department: z.string().min(1).max(128).optional(),
  tags: z.array(tag).max(64).optional(),
});

// ---------------------------------------------------------------- migrations
const knob = {
  initialDowntimeMs: z.number().optional(),
  downtimeSteps: z.number().optional(),
  downtimeStepDelaySecPerGiB: z.number().optional(),
  completionTimeoutSecPerGiB: z.number().optional(),
  progressTimeoutSec: z.number().optional(),
  stallWindowSec: z.number().optional(),
  maxRounds: z.number().optional(),
  maxSentFactor: z.number().optional(),
  onStall: z.enum(['abort', 'auto-converge', 'switchover']).optional(),
  throttleInitialPct: z.number().optional(),
  throttleIncrementPct: z.number().optional(),
  throttleMaxPct: z.number().optional(),
  throttleStepSec: z.number().optional(),
  onThrottleExhausted: z.enum(['abort', 'switchover']).optional(),
};
/** policy knobs a request may override (besides maxDowntimeMs, maxBandwidthMiBps, approveSwitchover) */
export const KNOB_FIELDS = Object.keys(knob) as (keyof typeof knob)[];

export const MigrationCreate = z.strictObject({
  kind: z.enum(['live', 'cold', 'storage', 'auto']),
  targetHostId: ref.optional(),
  targetDatastoreId: ref.optional(),
  maxBandwidthMiBps: z.number().positive().max(1_000_000).optional(),
  maxDowntimeMs: z.number().positive().max(600_000).optional(),
  policy: z.enum(POLICY_NAMES as [string, ...string[]]).optional(),
  approveSwitchover: z.boolean().optional().describe('true = hold at switchover (the source keeps running) until POST .../switchover approves it; false or absent = switch over as soon as the controller decides'),
  force: z.boolean().optional().describe('cold: power off after the graceful shutdown timeout'),
  start: z.boolean().optional().describe('cold: start on the target if it ran before (default true)'),
  flatten: z.boolean().optional().describe('cold: flatten linked clones (false = keep the chain, refused if its base is not on the target)'),
  shutdownTimeoutMs: z.number().int().min(1000).max(3_600_000).optional().describe('cold: graceful shutdown timeout (default 60000)'),
  allowCold: z.boolean().optional().describe('auto: may fall back to a cold migration when live is not possible'),
  ...knob,
});
export type MigrationCreate = z.infer<typeof MigrationCreate>;

export const MigrationPatch = z
  .strictObject({
    maxBandwidthMiBps: z.number().positive().max(1_000_000).optional(),
    maxDowntimeMs: z.number().positive().max(600_000).optional(),
  })
  .refine((b) => b.maxBandwidthMiBps !== undefined || b.maxDowntimeMs !== undefined, {
    message: 'give maxBandwidthMiBps and/or maxDowntimeMs',
    path: ['maxBandwidthMiBps'],
  });

export const CancelBody = z.strictObject({ reason: z.string().max(512).optional() }).nullish();

export const MigrationListQuery = z.object({
  ...pageQuery,
  state: z.enum(OPERATION_STATES).optional(),
  vmId: ref.optional(),
});

export const MigrationAccepted = z
  .object({ migrationId: z.string(), workflowId: z.string(), operationId: z.string(), webUiUrl: z.string() })
  .loose();

// ---------------------------------------------------------------- templates
export const TemplateCreate = z.strictObject({
  id: safeId('id').optional(),
  name: safeId('name'),
  os: z.string().min(1).max(64),
  imagePath: hostPath,
  datastoreIds: z.array(ref).min(1).max(256),
  diskGiB: z.number().int().min(1).max(64 * 1024),
  minMemoryMiB: z.number().int().min(0).max(16 * 1024 * 1024).default(0),
  requiredCpuFeatures: z.array(z.string().min(1).max(64)).max(512).default([]),
  owner: z.string().min(1).max(128).optional(),
  department: z.string().min(1).max(128).optional(),
  tags: z.array(tag).max(64).default([]),
});

export const TemplatePatch = z
  .strictObject({
    os: z.string().min(1).max(64).optional(),
    minMemoryMiB: z.number().int().min(0).max(16 * 1024 * 1024).optional(),
    requiredCpuFeatures: z.array(z.string().min(1).max(64)).max(512).optional(),
    owner: z.string().min(1).max(128).nullable().optional(),
    department: z.string().min(1).max(128).nullable().optional(),
    tags: z.array(tag).max(64).optional(),
    datastoreIds: z.array(ref).min(1).max(256).optional(),
  })
  .refine((b) => Object.keys(b).length > 0, { message: 'give at least one field to change', path: ['body'] });

export const TemplateListQuery = z.object({
  ...pageQuery,
  owner: z.string().max(128).optional(),
  department: z.string().max(128).optional(),
  tag: z.string().max(63).optional(),
});

// ---------------------------------------------------------------- networks
const ipv4 = z.ipv4();
export const NetworkCreate = z
  .strictObject({
    id: safeId('id').optional(),
    name: safeId('name'),
    vlan: z.number().int().min(1).max(4094).optional(),
    cidr: z.cidrv4(),
    gateway: ipv4,
    dns: z.array(ipv4).max(8).default([]),
    hostIds: z.array(ref).max(4096).default([]),
    pools: z.array(z.strictObject({ start: ipv4, end: ipv4 })).max(64).default([]),
  })
  .superRefine((b, ctx) => {
    const [base, bits] = b.cidr.split('/') as [string, string];
    const prefix = Number(bits);
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    const net = (ipToInt(base) & mask) >>> 0;
    const inside = (ip: string) => ((ipToInt(ip) & mask) >>> 0) === net;
    if (!inside(b.gateway)) ctx.addIssue({ code: 'custom', path: ['gateway'], message: `is not inside ${b.cidr}` });
    b.pools.forEach((p, i) => {
      if (!inside(p.start)) ctx.addIssue({ code: 'custom', path: ['pools', i, 'start'], message: `is not inside ${b.cidr}` });
      if (!inside(p.end)) ctx.addIssue({ code: 'custom', path: ['pools', i, 'end'], message: `is not inside ${b.cidr}` });
      if (ipToInt(p.end) < ipToInt(p.start)) ctx.addIssue({ code: 'custom', path: ['pools', i, 'end'], message: 'is before start' });
    });
  });

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

// ---------------------------------------------------------------- operations / simulator
export const OperationListQuery = z.object({
  ...pageQuery,
  kind: z.enum(OPERATION_KINDS).optional(),
  state: z.enum(OPERATION_STATES).optional(),
  vmId: ref.optional(),
  principal: z.string().min(1).max(128).optional().describe('who started it: a token name, bootstrap-admin, env-operator, env-viewer, schedule'),
});

export const SimFault = z
  .strictObject({
    id: safeId('id').optional().describe('stable id: re-injecting the same id replaces the fault'),
    kind: z.enum(FAULT_KINDS),
    hostId: ref.optional(),
    peerHostId: ref.optional().describe('link-cut: the other end (absent = every link of hostId)'),
    datastoreId: ref.optional().describe('slow-disk: one datastore instead of all of a host'),
    vmId: ref.optional(),
    stage: z.number().int().min(1).max(5).optional().describe('fail-stage / destination-crash: migration stage 1, 2, 3 or 5'),
    step: z.enum(FAULT_STEPS).optional().describe('fail-step: the driver method that fails'),
    count: z.number().int().min(-1).max(1_000_000).refine((n) => n !== 0, 'must be a positive integer or -1 (until cleared)').optional(),
    value: z.number().min(0).optional().describe('dirty-rate: bytes/s; slow-disk: throughput divisor (>= 1)'),
  })
  .superRefine((b, ctx) => {
    const need = (field: string, why: string) => ctx.addIssue({ code: 'custom', path: [field], message: why });
    if ((b.kind === 'fail-stage' || b.kind === 'destination-crash') && b.stage === 4) {
      need('stage', 'stage 4 (commit) is a database step outside the driver; use 1, 2, 3 or 5');
    }
    switch (b.kind) {
      case 'fail-stage':
        if (b.stage === undefined) need('stage', 'is required for fail-stage (1, 2, 3 or 5)');
        break;
      case 'fail-step':
        if (b.step === undefined) need('step', 'is required for fail-step');
        break;
      case 'destination-crash':
      case 'link-cut':
        if (b.hostId === undefined) need('hostId', `is required for ${b.kind}`);
        break;
      case 'dirty-rate':
        if (b.vmId === undefined) need('vmId', 'is required for dirty-rate');
        if (b.value === undefined) need('value', 'is required for dirty-rate (bytes/s)');
        break;
      case 'slow-disk':
        if (b.hostId === undefined && b.datastoreId === undefined) need('hostId', 'hostId or datastoreId is required for slow-disk');
        if (b.value !== undefined && b.value < 1) need('value', 'slow-disk throughput divisor must be >= 1');
        break;
    }
  });
