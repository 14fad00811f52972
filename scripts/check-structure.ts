// Structure check: the import arrows of ARCHITECTURE.md section 7, no import cycle, and no long
// file nobody explained. Run as a test (test/unit/structure.test.ts) and by hand:
// `npx tsx scripts/check-structure.ts`. Each folder's README states the same rule in words.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

/** Folders whose files are checked (test/ may import anything, it is not shipped). */
export const LAYERS = ['domain', 'workflows', 'activities', 'drivers', 'db', 'api', 'cli', 'config', 'metrics', 'workers', 'scripts', 'bench'] as const;
export type Layer = (typeof LAYERS)[number];

/**
 * What each layer may import, by path prefix of the imported file (relative to the root).
 * `runtime` applies to value imports; `types` adds what `import type` may reach. Packages are
 * checked separately: domain/ imports none, workflows/ only the sandbox-safe SDK packages.
 */
export const RULES: Record<Layer, { runtime: string[]; types?: string[] }> = {
  domain: { runtime: ['domain/'] },
  workflows: { runtime: ['domain/', 'workflows/'], types: ['activities/'] },
  activities: { runtime: ['domain/', 'activities/', 'drivers/hypervisor.ts', 'db/', 'workflows/definitions.ts'] },
  drivers: { runtime: ['domain/', 'drivers/'] },
  db: { runtime: ['domain/', 'db/'] },
  api: { runtime: ['domain/', 'api/', 'db/', 'config/', 'metrics/', 'workflows/definitions.ts'] },
  cli: { runtime: ['domain/', 'cli/'] },
  config: { runtime: ['domain/', 'config/'] },
  metrics: { runtime: ['domain/', 'metrics/'] },
  // composition roots: anything but the tests
  workers: { runtime: LAYERS.map((l) => `${l}/`) },
  scripts: { runtime: LAYERS.map((l) => `${l}/`) },
  bench: { runtime: [...LAYERS.map((l) => `${l}/`), 'test/helpers/'] },
};

const PACKAGE_RULES: Partial<Record<Layer, (pkg: string) => boolean>> = {
  domain: () => false,
  workflows: (p) => p === '@temporalio/workflow' || p === '@temporalio/common',
};

/** Each driver is its own room: sim/ and qemu/ (and later libvirt/) never import each other. */
function driverRoom(file: string): string | undefined {
  const m = /^drivers\/([^/]+)\//.exec(file);
  return m ? m[1] : undefined;
}

/** Files longer than this must be named, with the reason, in their folder's README. */
export const MAX_LINES = 500;

export interface ImportEdge {
  from: string;
  to: string;
  line: number;
  typeOnly: boolean;
  /** bare package specifier when `to` is not a project file */
  pkg?: string;
}

export interface StructureProblem {
  file: string;
  line: number;
  message: string;
}

const IMPORT_RE =
  /^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/gm;

export function parseImports(file: string, source: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const m of source.matchAll(IMPORT_RE)) {
    const spec = m[4] ?? m[5] ?? m[6];
    const clause = (m[3] ?? '').trim();
    // `import { type A, type B } from` is as type-only as `import type { A, B } from`
    const allTypes = /^\{[^}]*\}$/.test(clause) && clause.slice(1, -1).split(',').map((s) => s.trim()).filter(Boolean).every((s) => s.startsWith('type '));
    const typeOnly = Boolean(m[2]) || allTypes;
    const line = source.slice(0, m.index).split('\n').length;
    if (spec.startsWith('.')) {
      const to = relative(ROOT, resolve(ROOT, dirname(file), spec)).replace(/\.js$/, '.ts');
      edges.push({ from: file, to, line, typeOnly });
    } else {
      const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
      edges.push({ from: file, to: spec, line, typeOnly, pkg });
    }
  }
  return edges;
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) return n === 'node_modules' || n === 'generated' ? [] : walk(p);
    return p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

export function layerOf(file: string): Layer | undefined {
  const top = file.split('/')[0];
  return (LAYERS as readonly string[]).includes(top) ? (top as Layer) : undefined;
}

/** Checks one edge against the layer rules; undefined when allowed. */
export function edgeProblem(e: ImportEdge): string | undefined {
  const layer = layerOf(e.from);
  if (!layer) return undefined;
  if (e.pkg !== undefined) {
    const allowed = PACKAGE_RULES[layer];
    if (!allowed) return undefined;
    if (e.typeOnly && layer === 'workflows') return undefined;
    if (e.to.startsWith('node:') || !allowed(e.pkg)) return `${layer}/ may not import the package "${e.to}"`;
    return undefined;
  }
  // bench/ is a harness like the tests: it may reuse their cluster helpers, nothing shipped may
  if (e.to.startsWith('test/') && !(layer === 'bench' && e.to.startsWith('test/helpers/'))) return `${layer}/ may not import test code (${e.to})`;
  const rule = RULES[layer];
  const prefixes = e.typeOnly ? [...rule.runtime, ...(rule.types ?? [])] : rule.runtime;
  if (!prefixes.some((p) => e.to === p || e.to.startsWith(p))) {
    return `${layer}/ may not import ${e.to}${e.typeOnly ? '' : ' (not even at runtime)'}: allowed ${prefixes.join(', ')}`;
  }
  const fromRoom = driverRoom(e.from);
  const toRoom = driverRoom(e.to);
  if (fromRoom && toRoom && fromRoom !== toRoom) return `drivers/${fromRoom}/ may not import another driver (${e.to})`;
  return undefined;
}

/** Import cycles between project files (type-only imports included: a cycle is a cycle). */
export function findCycles(edges: ImportEdge[]): string[][] {
  const graph = new Map<string, string[]>();
  for (const e of edges) {
    if (e.pkg !== undefined) continue;
    if (!graph.has(e.from)) graph.set(e.from, []);
    graph.get(e.from)!.push(e.to);
  }
  // Tarjan's strongly connected components; a component of more than one file is a cycle
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(comp.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return cycles;
}

/** A long file is fine when its folder's README names it on a line that says why. */
function longFileExplained(file: string): boolean {
  let dir = dirname(join(ROOT, file));
  const name = file.split('/').pop()!;
  while (dir.startsWith(ROOT)) {
    const readme = join(dir, 'README.md');
    if (existsSync(readme) && readFileSync(readme, 'utf8').split('\n').some((l) => l.includes(name) && /\blines?\b/.test(l))) return true;
    if (dir === ROOT) break;
    dir = dirname(dir);
  }
  return false;
}

export interface StructureReport {
  files: number;
  edges: ImportEdge[];
  problems: StructureProblem[];
}

export function checkStructure(): StructureReport {
  const files = LAYERS.flatMap((l) => walk(join(ROOT, l))).map((f) => relative(ROOT, f));
  const edges: ImportEdge[] = [];
  const problems: StructureProblem[] = [];
  for (const file of files) {
    const source = readFileSync(join(ROOT, file), 'utf8');
    const fileEdges = parseImports(file, source);
    edges.push(...fileEdges);
    for (const e of fileEdges) {
      const message = edgeProblem(e);
      if (message) problems.push({ file, line: e.line, message });
    }
    const lines = source.split('\n').length;
    if (lines > MAX_LINES && !longFileExplained(file)) {
      problems.push({ file, line: 1, message: `${lines} lines (over ${MAX_LINES}): split it by concern, or say why in its folder's README` });
    }
  }
  for (const cycle of findCycles(edges)) problems.push({ file: cycle[0], line: 1, message: `import cycle: ${cycle.join(' -> ')}` });
  return { files: files.length, edges, problems };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { files, problems } = checkStructure();
  for (const p of problems) console.error(`${p.file}:${p.line}: ${p.message}`);
  console.log(problems.length ? `${problems.length} problem(s) in ${files} files` : `${files} files: layers, cycles and file sizes as the READMEs say`);
  process.exit(problems.length ? 1 : 0);
}
