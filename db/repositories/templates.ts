// Templates: OS images per purpose or department, with owner tags.
// Part of the inventory repository (see inventory.ts for the rules every function follows).
import type { Db, Em } from '../orm.js';
import { emOf } from '../orm.js';
import { Template } from '../entities.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { assertInt, assertNonEmpty, assertSafe, assertStringArray, isUniqueViolation, newId, type Page, type PageRequest } from './util.js';
import { listById, mustGet, definedOnly } from './rows.js';

// ---- templates --------------------------------------------------------------------------------

export interface TemplateInput {
  /** Default: `tpl-<uuid>`. */
  id?: string;
  name: string;
  os: string;
  imagePath: string;
  datastoreIds: string[];
  diskGiB: number;
  minMemoryMiB: number;
  requiredCpuFeatures?: string[];
  owner?: string | null;
  department?: string | null;
  tags?: string[];
  sourceVmId?: string | null;
}

export type TemplatePatch = Partial<Omit<TemplateInput, 'id'>>;

function validateTemplate(t: TemplatePatch & { id?: string }, creating: boolean): void {
  if (creating && t.id !== undefined) assertSafe('id', t.id);
  if (creating || t.name !== undefined) assertSafe('name', t.name);
  if (creating || t.os !== undefined) assertNonEmpty('os', t.os);
  if (creating || t.imagePath !== undefined) assertNonEmpty('imagePath', t.imagePath);
  if (creating || t.datastoreIds !== undefined) assertStringArray('datastoreIds', t.datastoreIds);
  if (creating || t.diskGiB !== undefined) assertInt('diskGiB', t.diskGiB, 1);
  if (creating || t.minMemoryMiB !== undefined) assertInt('minMemoryMiB', t.minMemoryMiB, 0);
  if (t.requiredCpuFeatures !== undefined) assertStringArray('requiredCpuFeatures', t.requiredCpuFeatures);
  if (t.tags !== undefined) assertStringArray('tags', t.tags);
}

function templateNameTaken(name: string, cause?: unknown): ConflictError {
  return new ConflictError(`template name "${name}" is taken`, 'template', 'name', name, cause ? { cause } : undefined);
}

export async function createTemplate(x: Db | Em, input: TemplateInput): Promise<Template> {
  validateTemplate(input, true);
  const id = input.id ?? newId('tpl');
  const em = emOf(x).fork();
  const byName = await em.findOne(Template, { name: input.name });
  if (byName) {
    if (byName.id === id) return byName; // a retried create
    throw templateNameTaken(input.name);
  }
  if (await em.findOne(Template, { id })) throw new ConflictError(`template ${id} already exists`, 'template', 'id', id);
  const t = em.create(Template, {
    ...input,
    id,
    requiredCpuFeatures: input.requiredCpuFeatures ?? [],
    owner: input.owner ?? null,
    department: input.department ?? null,
    tags: input.tags ?? [],
    sourceVmId: input.sourceVmId ?? null,
  });
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e)) throw templateNameTaken(input.name, e);
    throw e;
  }
  return t;
}

export const getTemplate = (x: Db | Em, id: string): Promise<Template> => mustGet(x, Template, 'template', id);

export async function getTemplateByName(x: Db | Em, name: string): Promise<Template> {
  const t = await emOf(x).findOne(Template, { name });
  if (!t) throw new NotFoundError('template', name);
  return t;
}

export interface TemplateFilter extends PageRequest {
  owner?: string;
  department?: string;
}

export async function listTemplates(x: Db | Em, filter: TemplateFilter = {}): Promise<Page<Template>> {
  return listById(x, Template, filter, definedOnly({ owner: filter.owner, department: filter.department }));
}

export async function updateTemplate(x: Db | Em, id: string, patch: TemplatePatch): Promise<Template> {
  validateTemplate(patch, false);
  const em = emOf(x).fork();
  const t = await getTemplate(em, id);
  if (patch.name !== undefined && patch.name !== t.name && (await em.findOne(Template, { name: patch.name }))) throw templateNameTaken(patch.name);
  Object.assign(t, definedOnly(patch));
  try {
    await em.flush();
  } catch (e) {
    if (isUniqueViolation(e) && patch.name) throw templateNameTaken(patch.name, e);
    throw e;
  }
  return t;
}

/** Idempotent: answers whether a row was deleted. */
export async function deleteTemplate(x: Db | Em, id: string): Promise<boolean> {
  return (await emOf(x).nativeDelete(Template, { id })) > 0;
}
