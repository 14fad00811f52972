// Arbitraries for the API fuzz test (test/api/fuzz.test.ts): requests derived from a route's own
// zod schemas (through their JSON Schema), mutated into every kind of bad input a client can
// send: odd path ids, junk query strings, broken bodies and content types, auth header variants.
import fc from 'fast-check';
import { z } from 'zod';
import type { InjectOptions } from 'fastify';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Js = Record<string, any>;

/** The route's schema part (zod) as JSON Schema, or undefined when it has none. */
export function jsonSchemaOf(s: unknown): Js | undefined {
  if (!s || typeof s !== 'object' || !('_zod' in s)) return undefined;
  return z.toJSONSchema(s as z.ZodType, { unrepresentable: 'any', io: 'input' }) as Js;
}

const cap = (n: number | undefined, max: number) => Math.min(n ?? max, max);

/** Values that satisfy the JSON Schema's structure (refinements are zod's, not checked here). */
export function arbitraryOf(js: Js, depth = 0): fc.Arbitrary<unknown> {
  const alts = js.anyOf ?? js.oneOf;
  if (Array.isArray(alts)) return fc.oneof(...alts.map((a: Js) => arbitraryOf(a, depth + 1)));
  if (js.const !== undefined) return fc.constant(js.const);
  if (Array.isArray(js.enum)) return fc.constantFrom(...js.enum);
  switch (js.type) {
    case 'object': {
      const props = (js.properties ?? {}) as Record<string, Js>;
      const rec = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, arbitraryOf(v, depth + 1)]));
      return fc.record(rec, { requiredKeys: (js.required ?? []) as string[] });
    }
    case 'array': {
      const min = js.minItems ?? 0;
      return fc.array(arbitraryOf(js.items ?? {}, depth + 1), { minLength: min, maxLength: Math.max(min, cap(js.maxItems, 3)) });
    }
    case 'string':
      if (js.format === 'ipv4') return fc.ipV4();
      if (typeof js.pattern === 'string') {
        const max = js.maxLength ?? Infinity;
        return fc.stringMatching(new RegExp(js.pattern)).filter((s) => s.length <= max && s.length >= (js.minLength ?? 0));
      }
      return fc.string({ minLength: js.minLength ?? 0, maxLength: Math.max(js.minLength ?? 0, cap(js.maxLength, 24)), unit: 'grapheme' });
    case 'integer':
      return fc.integer({ min: Math.max(js.minimum ?? -1e6, -(2 ** 31)), max: Math.min(js.maximum ?? 1e6, 2 ** 31) });
    case 'number': {
      const min = js.minimum ?? (js.exclusiveMinimum !== undefined ? js.exclusiveMinimum + 1e-6 : -1e6);
      const max = js.maximum ?? (js.exclusiveMaximum !== undefined ? js.exclusiveMaximum - 1e-6 : 1e6);
      return fc.double({ min, max, noNaN: true, noDefaultInfinity: true });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    default:
      return depth > 2 ? fc.constant('x') : junk;
  }
}

/** Wrong-typed or absurd values for any field. */
export const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', '\uFEFF', '\uD800', '../../etc/passwd', "'; drop table vm; --", '$(reboot)', 'NaN', 'true', '1e400', '-1', '__proto__'),
  fc.integer(),
  fc.constantFrom(-1, 0, 1e308, -1e308, 2 ** 53 + 1, 0.5, -0),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 4 })), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.integer(), fc.string({ maxLength: 4 }), fc.constant(null)), { maxKeys: 3 }),
  fc.constant({ a: { b: { c: { d: [1, { e: null }] } } } }),
);

/** A body as the client sends it: the payload text (undefined = none) and its content type. */
export interface WireBody {
  payload?: string;
  contentType?: string;
}

const json = (v: unknown): WireBody => ({ payload: JSON.stringify(v), contentType: 'application/json' });

/** Mutations of a structurally valid object: a field missing, wrong-typed, extra, nested junk, huge. */
function mutated(valid: fc.Arbitrary<unknown>, js: Js | undefined): fc.Arbitrary<unknown> {
  const keys = Object.keys(js?.properties ?? js?.anyOf?.find((a: Js) => a.type === 'object')?.properties ?? {});
  const key = keys.length ? fc.constantFrom(...keys) : fc.string({ minLength: 1, maxLength: 8 });
  const asObj = (v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
  return fc.oneof(
    fc.tuple(valid, key).map(([v, k]) => {
      const o = { ...asObj(v) };
      delete o[k];
      return o;
    }),
    fc.tuple(valid, key, junk).map(([v, k, j]) => ({ ...asObj(v), [k]: j })),
    fc.tuple(valid, fc.string({ minLength: 1, maxLength: 10 }), junk).map(([v, k, j]) => ({ ...asObj(v), [k]: j })),
    fc.tuple(valid, fc.constantFrom('__proto__', 'constructor', 'prototype')).map(([v, k]) => JSON.parse(`{${JSON.stringify(k)}:{"polluted":true},${JSON.stringify(asObj(v)).slice(1)}`.replace(/,}$/, '}'))),
    fc.tuple(valid, key, fc.constantFrom(70_000, 200_000)).map(([v, k, n]) => ({ ...asObj(v), [k]: 'x'.repeat(n) })),
    valid.map((v) => [v]),
  );
}

/** Bodies for a route: valid-shaped ones (from its schema), mutations, and malformed wire bodies. */
export function bodyArbitrary(bodySchema: unknown): fc.Arbitrary<WireBody> {
  const js = jsonSchemaOf(bodySchema);
  const valid = js ? arbitraryOf(js) : fc.constant({});
  return fc.oneof(
    { weight: 3, arbitrary: valid.map(json) },
    { weight: 4, arbitrary: mutated(valid, js).map(json) },
    { weight: 1, arbitrary: junk.map(json) },
    {
      weight: 2,
      arbitrary: fc.oneof(
        fc.constantFrom<WireBody>(
          {},
          { payload: '', contentType: 'application/json' },
          { payload: '{', contentType: 'application/json' },
          { payload: '{"a":', contentType: 'application/json' },
          { payload: 'nul', contentType: 'application/json' },
          { payload: '\u0000', contentType: 'application/json' },
          { payload: '{"a":1}{"b":2}', contentType: 'application/json' },
          { payload: '{"__proto__":{"x":1}}', contentType: 'application/json' },
          { payload: '{"constructor":{"prototype":{"x":1}}}', contentType: 'application/json' },
          { payload: 'x'.repeat(1024 * 1024 + 10), contentType: 'application/json' },
          { payload: 'a=1&b=2', contentType: 'application/x-www-form-urlencoded' },
          { payload: '{}', contentType: 'text/plain' },
          { payload: '{}', contentType: 'application/json; charset=latin1' },
          { payload: '{}', contentType: 'multipart/form-data; boundary=x' },
          { payload: '{}', contentType: 'application/xml' },
          { payload: '{}', contentType: 'application/json, text/plain' },
          { payload: '{}', contentType: '' },
          { payload: '<x/>' },
        ),
        fc.tuple(valid, fc.constantFrom('text/plain', 'application/octet-stream', 'APPLICATION/JSON', 'application/vnd.api+json')).map(([v, ct]) => ({ payload: JSON.stringify(v), contentType: ct })),
      ),
    },
  );
}

const ODD_IDS = [
  '%00', 'a%00b', '%2F', 'a%2Fb', '..', '%2e%2e', '.', '%2E', 'vm-a', 'a', 'h1', 'h3', 'small', 'net1', 'shared', 'migrate-vm-a', 'migrate-vm-moving', 'evacuate-h1',
  'rebalance-default', 'run-moving', 'unknown-vm-vm-x', 'rebalance', 'reconcile', "'%3B%20drop%20table%20vm%3B--", '$(reboot)', '%60id%60', '%24%7BIFS%7D', '%F0%9F%92%A9',
  '%C3%A9t%C3%A9', '%FF', '%E0%A4', '%', '%zz', '%20', '+', '*', '~', "a'b", 'a%22b', '%0A', '%0D%0A', '%5C', '%7F', '%1B%5B31m', "!$&'()*+,;=:@", 'migrate-%00',
  'CON', 'null', 'undefined', '0', '-1', '1e400', 'NaN', '__proto__', 'constructor', '%EF%BB%BF', '%E2%80%AE', 'migrate-' + 'x'.repeat(90),
];

/** Path parameter values, already URL-encoded as they travel. */
export const pathParam: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...ODD_IDS) },
  { weight: 2, arbitrary: fc.string({ minLength: 1, maxLength: 40, unit: 'binary' }).map(encodeURIComponent) },
  { weight: 1, arbitrary: fc.constantFrom(99, 100, 101, 129, 300, 5000).map((n) => 'v'.repeat(n)) },
  { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/) },
);

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const CURSORS = [
  b64({ id: 'vm-a' }), b64({ id: 'x', t: '2020-01-01T00:00:00.000Z' }), b64({ id: '\u0000', t: '2020-01-01T00:00:00.000Z' }), b64({ id: 'a\u0000' }),
  b64({ id: 'x', t: '-271821-04-20T00:00:00.000Z' }), b64({ id: 'x', t: '+275760-09-13T00:00:00.000Z' }), b64({ id: 'x', t: '0001-01-01' }), b64({ id: 'x', t: '1' }),
  b64({ id: 5 }), b64({ id: ['x'] }), b64({ id: 'x', t: 'yesterday' }), b64('[]'), b64('null'), b64('"x"'), 'not-base64!', '%00', '', b64({ id: { $gt: '' } }), b64({ id: 'x', t: { $ne: 1 } }),
];

/** Query strings (without '?'): schema-valid values, junk values, unknown and repeated keys. */
export function queryArbitrary(querySchema: unknown): fc.Arbitrary<string> {
  const js = jsonSchemaOf(querySchema);
  const props = (js?.properties ?? {}) as Record<string, Js>;
  const keys = Object.keys(props);
  const value = (k: string | undefined): fc.Arbitrary<string> =>
    fc.oneof(
      { weight: 3, arbitrary: k && props[k] ? arbitraryOf(props[k]).map((v) => String(v)) : fc.constant('x') },
      { weight: 1, arbitrary: k === 'cursor' ? fc.constantFrom(...CURSORS) : fc.constantFrom('', '-1', '0', '1e400', 'NaN', 'Infinity', '0x10', '99999999999999999999', '1.5', 'true', '%00', 'a%00b', '%FF', '[]', '{}', '%5B%5D') },
      { weight: 1, arbitrary: fc.string({ maxLength: 10, unit: 'binary' }).map(encodeURIComponent) },
    );
  const known = keys.length ? fc.constantFrom(...keys) : fc.constant('limit');
  const pair = fc.oneof(
    { weight: 4, arbitrary: known.chain((k) => value(k).map((v) => `${k}=${v}`)) },
    { weight: 1, arbitrary: fc.constantFrom('unknown', '__proto__', 'constructor', 'a[b]', 'limit[]', '%00', '').chain((k) => value(undefined).map((v) => `${k}=${v}`)) },
    { weight: 1, arbitrary: known },
  );
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant('') },
    { weight: 5, arbitrary: fc.array(pair, { minLength: 1, maxLength: 4 }).map((ps) => ps.join('&')) },
    { weight: 1, arbitrary: known.chain((k) => fc.tuple(value(k), value(k)).map(([a, b]) => `${k}=${a}&${k}=${b}`)) },
    { weight: 1, arbitrary: fc.constantFrom('&&&', '=', '==x', '%', '?x=1', 'a=%zz', 'limit=1;drop') },
  );
}

/** Authorization variants around the admin token: most pass auth and reach validation. */
export function headerArbitrary(adminToken: string): fc.Arbitrary<Record<string, string>> {
  const auth = fc.oneof(
    { weight: 12, arbitrary: fc.constant(`Bearer ${adminToken}`) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        `bearer ${adminToken}`, `BEARER ${adminToken}`, `Bearer  ${adminToken}`, `Bearer ${adminToken} `, ` Bearer ${adminToken}`, `Bearer ${adminToken}x`,
        `Bearer ${adminToken.slice(0, -1)}`, `Basic ${Buffer.from(`admin:${adminToken}`).toString('base64')}`, 'Bearer', 'Bearer ', '', `Token ${adminToken}`,
        `Bearer ${adminToken}, Bearer other`, `Bearer ${'x'.repeat(8192)}`, 'Bearer %00',
      ),
    },
  );
  const extra = fc.record(
    {
      accept: fc.constantFrom('application/json', 'text/html', '*/*', 'application/xml', ''),
      'x-request-id': fc.string({ maxLength: 20 }).map(encodeURIComponent),
      'idempotency-key': fc.oneof(fc.string({ maxLength: 20 }).map(encodeURIComponent), fc.constant('x'.repeat(4096))),
      'x-forwarded-for': fc.constantFrom('1.2.3.4', 'not-an-ip', '::1, 10.0.0.1'),
      'content-encoding': fc.constantFrom('gzip', 'br', 'identity'),
    },
    { requiredKeys: [] },
  );
  return fc.tuple(auth, extra).map(([a, e]) => ({ ...(e as Record<string, string>), ...(a ? { authorization: a } : {}) }));
}

/** One injectable request for a route `url` (fastify syntax `/v1/vms/:id`). */
export function requestArbitrary(method: string, url: string, schema: Record<string, unknown> | undefined, adminToken: string): fc.Arbitrary<InjectOptions> {
  const names = [...url.matchAll(/:(\w+)/g)].map((m) => m[1]!);
  const params = fc.tuple(...names.map(() => pathParam));
  const wildcard = url.endsWith('*') ? fc.constantFrom('', 'x', '..%2F..%2Fetc%2Fpasswd', 'index.html', '%00', 'a/b/c') : fc.constant('');
  const body = method === 'GET' || method === 'HEAD' ? fc.oneof({ weight: 5, arbitrary: fc.constant<WireBody>({}) }, { weight: 1, arbitrary: bodyArbitrary(undefined) }) : bodyArbitrary(schema?.body);
  return fc.record({ params, wildcard, query: queryArbitrary(schema?.querystring), body, headers: headerArbitrary(adminToken) }).map(({ params: ps, wildcard: w, query, body: b, headers }) => {
    let path = url;
    names.forEach((n, i) => (path = path.replace(`:${n}`, ps[i] ?? 'x')));
    path = path.replace(/\*$/, w);
    const h: Record<string, string> = { ...headers };
    if (b.contentType !== undefined) h['content-type'] = b.contentType;
    return { method: method as InjectOptions['method'], url: query ? `${path}?${query}` : path, headers: h, ...(b.payload !== undefined ? { payload: b.payload } : {}) };
  });
}
