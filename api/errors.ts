// One error shape for every 4xx/5xx the API answers, and the mapping from domain errors
// (db/errors.ts, Temporal client errors, policy errors, schema validation) onto status codes.
// Bad input never becomes a 500: anything that is the caller's fault is mapped here.
import type { FastifyError, FastifyInstance } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { CapacityError, ConflictError, DatabaseUnavailableError, NotFoundError, ValidationError } from '../db/errors.js';
import { PolicyError } from '../domain/policies.js';

export interface FieldProblem {
  field: string;
  problem: string;
}

export interface ErrorBody {
  error: string;
  message: string;
  fields?: FieldProblem[];
  [extra: string]: unknown;
}

/** An error the route handlers throw on purpose; the error handler sends `body` with `status`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(body.message);
    this.name = 'HttpError';
  }
}

/** 400 (malformed) or 422 (well-formed but refers to something impossible), naming the field. */
export function invalid(field: string, problem: string, status: 400 | 422 = 422): HttpError {
  return new HttpError(status, { error: 'validation', message: `${field}: ${problem}`, fields: [{ field, problem }] });
}

export function notFound(what: string, id: string): HttpError {
  return new HttpError(404, { error: 'not_found', message: `${what} ${id} not found` });
}

export function conflict(message: string, extra: Record<string, unknown> = {}): HttpError {
  return new HttpError(409, { error: 'conflict', message, ...extra });
}

/** A field path from a zod issue path: ['import', 'path'] -> 'import.path'; [] -> the part. */
function fieldOf(path: string, part: string | undefined): string {
  const p = path.replace(/^\//, '').split('/').filter(Boolean).join('.');
  return p || part || 'body';
}

interface ValidationIssue {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

function fieldsFromValidation(issues: ValidationIssue[], part: string | undefined): FieldProblem[] {
  const fields: FieldProblem[] = [];
  for (const issue of issues) {
    const base = fieldOf(issue.instancePath ?? '', part);
    const keys = issue.params?.keys;
    if (issue.keyword === 'unrecognized_keys' && Array.isArray(keys)) {
      const prefix = base === part || base === 'body' ? '' : `${base}.`;
      // an empty key ({"": 1}) is named as what it is, not as a field called ''
      for (const k of keys) fields.push({ field: `${prefix}${String(k) === '' ? '""' : String(k)}`, problem: 'is not a known field' });
      continue;
    }
    fields.push({ field: base, problem: issue.message ?? 'is invalid' });
  }
  return fields;
}

export function validationBody(fields: FieldProblem[], part?: string): ErrorBody {
  const where = part && part !== 'body' ? ` (${part})` : '';
  return {
    error: 'validation',
    message: `invalid request${where}: ${fields.map((f) => `${f.field} ${f.problem}`).join('; ')}`,
    fields,
  };
}

/** Maps any thrown value onto [status, body]. Exported for unit tests. */
export function toHttpError(err: unknown): { status: number; body: ErrorBody; log: boolean } {
  if (err instanceof HttpError) return { status: err.status, body: err.body, log: err.status >= 500 };
  if (hasZodFastifySchemaValidationErrors(err)) {
    const part = (err as { validationContext?: string }).validationContext;
    return { status: 400, body: validationBody(fieldsFromValidation(err.validation as ValidationIssue[], part), part), log: false };
  }
  if (err instanceof PolicyError) {
    return { status: 400, body: { error: 'validation', message: err.message, fields: [{ field: err.field, problem: err.message }] }, log: false };
  }
  if (err instanceof ValidationError) {
    return { status: 400, body: { error: 'validation', message: err.message, fields: [{ field: err.field, problem: err.message }] }, log: false };
  }
  if (err instanceof NotFoundError) return { status: 404, body: { error: 'not_found', message: err.message, entity: err.entity, id: err.id }, log: false };
  if (err instanceof ConflictError) {
    return { status: 409, body: { error: 'conflict', message: err.message, entity: err.entity, field: err.field, ...(err.value !== undefined ? { value: err.value } : {}) }, log: false };
  }
  if (err instanceof CapacityError) {
    return {
      status: 422,
      body: { error: 'capacity', message: err.message, resource: err.resource, fields: [{ field: err.resource, problem: err.message }], ...err.details },
      log: false,
    };
  }
  if (err instanceof WorkflowExecutionAlreadyStartedError) {
    return {
      status: 409,
      body: { error: 'conflict', message: `operation ${err.workflowId} is already running`, workflowId: err.workflowId, operationId: err.workflowId },
      log: false,
    };
  }
  if (err instanceof WorkflowNotFoundError) {
    return { status: 404, body: { error: 'not_found', message: `workflow ${err.workflowId} not found` }, log: false };
  }
  if (err instanceof DatabaseUnavailableError) return { status: 503, body: { error: 'unavailable', message: err.message }, log: true };
  const fe = err as Partial<FastifyError>;
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // Fastify's own client errors: malformed JSON, wrong content type, body too large, ...
    const field = fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'content-type' : 'body';
    return { status: fe.statusCode, body: { error: 'validation', message: fe.message ?? 'bad request', fields: [{ field, problem: fe.message ?? 'is invalid' }] }, log: false };
  }
  return { status: 500, body: { error: 'internal', message: 'internal error (see the server log)' }, log: true };
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err, req, reply) => {
    const { status, body, log } = toHttpError(err);
    if (log) req.log.error({ err }, 'request failed');
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` }),
  );
}
