// The CLI's connection to the API: where it is and which token to send (flags over the
// environment over the token file the API writes), and an openapi-fetch client typed by
// cli/generated/api.d.ts (generated from the API's own OpenAPI document: npm run gen:client).
// Every refusal and every unreachable API becomes an ApiError here, in one middleware, so the
// commands only ever see answers.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import createClient, { type Client, type ClientPathsWithMethod, type MethodResponse, type Middleware } from 'openapi-fetch';
import { nonEmpty, type Values } from './flags.js';
import { ApiError, UsageError } from './errors.js';
import type { paths } from './generated/api.js';

export const DEFAULT_API_URL = 'http://127.0.0.1:8080';

export interface Connection {
  url: string;
  token?: string;
  tokenSource: string;
}

export function resolveConnection(opts: Values, env: Record<string, string | undefined>, cwd: string): Connection {
  const raw = (opts.api as string | undefined) ?? env.FERRY_API_URL ?? DEFAULT_API_URL;
  const from = opts.api !== undefined ? '--api' : env.FERRY_API_URL !== undefined ? 'FERRY_API_URL' : 'the default';
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${from === '--api' ? 'flag --api' : from}: ${JSON.stringify(raw)} is not a URL (like ${DEFAULT_API_URL})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${from === '--api' ? 'flag --api' : from}: ${raw} must be an http(s) URL`);
  const base = url.toString().replace(/\/+$/, '');
  if (opts.token !== undefined) return { url: base, token: nonEmpty('token', opts.token as string), tokenSource: '--token' };
  if (env.FERRY_API_TOKEN) return { url: base, token: env.FERRY_API_TOKEN, tokenSource: 'FERRY_API_TOKEN' };
  const file = join(resolve(cwd, env.FERRY_DATA_DIR || './data'), 'api-token');
  try {
    const t = readFileSync(file, 'utf8').trim();
    if (t) return { url: base, token: t, tokenSource: file };
  } catch {
    // no token file: requests go without one and the API answers 401, explained in refusal()
  }
  return { url: base, tokenSource: 'none' };
}

export type FerryClient = Client<paths>;

type GetPath = ClientPathsWithMethod<FerryClient, 'get'>;
type GetAnswer<P extends GetPath> = MethodResponse<FerryClient, 'get', P>;
/** The paginated lists: GET paths answering {items, nextCursor}. */
export type ListPath = { [P in GetPath]: GetAnswer<P> extends { items: unknown[]; nextCursor: string | null } ? P : never }[GetPath];
export type ListItem<P extends ListPath> = GetAnswer<P> extends { items: (infer I)[] } ? I : never;
/** A list's filters (the pages are the client's business). */
export type ListQuery<P extends ListPath> = Omit<NonNullable<paths[P]['get']['parameters']['query']>, 'limit' | 'cursor'>;

export interface Api {
  readonly conn: Connection;
  readonly client: FerryClient;
  /** Every item of a paginated list, following nextCursor. */
  list<P extends ListPath>(path: P, query?: ListQuery<P>): Promise<ListItem<P>[]>;
}

export function createApi(conn: Connection, fetchFn: typeof fetch): Api {
  const client = createClient<paths>({
    baseUrl: conn.url,
    fetch: fetchFn,
    headers: { accept: 'application/json', ...(conn.token ? { authorization: `Bearer ${conn.token}` } : {}) },
  });
  client.use(errorMiddleware(conn));
  // One cast: openapi-fetch's GET cannot be called with a path that is itself a type parameter;
  // ListItem/ListQuery above give list() its types from the same generated paths.
  type Page = { data?: { items?: unknown[]; nextCursor?: string | null } };
  const getPage = client.GET as unknown as (path: string, init: { params: { query: object } }) => Promise<Page>;
  return {
    conn,
    client,
    async list(path, query) {
      const items: unknown[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 10_000; pages++) {
        const { data }: Page = await parsed(getPage(path, { params: { query: { ...query, limit: 500, ...(cursor ? { cursor } : {}) } } }));
        items.push(...(data?.items ?? []));
        cursor = data?.nextCursor ?? null;
        if (!cursor) break;
      }
      return items as ListItem<typeof path>[];
    },
  };
}

/** The body of an answer: every error status was already thrown as an ApiError by the middleware. */
export async function answer<T>(call: Promise<{ data?: T; response: Response }>): Promise<T> {
  const { data, response } = await parsed(call);
  if (data === undefined) throw new ApiError(`the API answered HTTP ${response.status} without a body`, response.status);
  return data;
}

/** openapi-fetch parses a success as JSON; anything else there is not the ferry API answering. */
async function parsed<R>(call: Promise<R>): Promise<R> {
  try {
    return await call;
  } catch (e) {
    if (e instanceof SyntaxError) throw new ApiError(`the API answered with something that is not JSON (${e.message}); is --api or FERRY_API_URL the ferry API?`);
    throw e;
  }
}

function errorMiddleware(conn: Connection): Middleware {
  return {
    async onResponse({ request, response }) {
      if (!response.ok) throw await refusal(conn, request, response);
      return undefined;
    },
    onError({ error }) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      return new ApiError(`cannot reach the ferry API at ${conn.url} (${cause?.code ?? cause?.message ?? (error as Error).message}); set --api or FERRY_API_URL`);
    },
  };
}

/** The API's message (it names the field), with what was asked: `msg [HTTP 422 POST /v1/vms]`. */
async function refusal(conn: Connection, request: Request, res: Response): Promise<ApiError> {
  const text = await res.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  const b = (data && typeof data === 'object' ? data : {}) as Record<string, unknown>;
  let msg = typeof b.message === 'string' ? b.message : typeof data === 'string' && data ? data : res.statusText;
  if (res.status === 409 && typeof b.workflowId === 'string' && !msg.includes(b.workflowId)) msg += ` (workflow ${b.workflowId})`;
  if (res.status === 401) {
    msg +=
      conn.tokenSource === 'none'
        ? ' (no token: pass --token, set FERRY_API_TOKEN, or run where <FERRY_DATA_DIR>/api-token exists)'
        : ` (token from ${conn.tokenSource})`;
  }
  // the path as asked, below the base URL and without the query
  const path = request.url.startsWith(conn.url) ? request.url.slice(conn.url.length) : new URL(request.url).pathname;
  return new ApiError(`${msg} [HTTP ${res.status} ${request.method} ${path.split('?')[0]}]`, res.status, data);
}
