// Lint rule: workflows/ runs in Temporal's deterministic sandbox, so it may import only
// @temporalio/workflow, @temporalio/common, its own files and the pure domain/ layer at runtime.
// Anything else (node:*, execa, the database, drivers, activities) is allowed only as `import type`.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const ALLOWED_PACKAGES = ['@temporalio/workflow', '@temporalio/common'];

export interface LintProblem {
  file: string;
  line: number;
  message: string;
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

export function lintWorkflowSource(file: string, source: string, workflowsDir = join(ROOT, 'workflows')): LintProblem[] {
  const problems: LintProblem[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]|\brequire\s*\(\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(re)) {
    const typeOnly = Boolean(m[2]) || /^\{\s*type\s[^,}]*\}$/.test(m[3] ?? '');
    const spec = m[4] ?? m[5] ?? m[6] ?? m[7];
    const line = source.slice(0, m.index).split('\n').length;
    if (typeOnly) continue;
    if (spec.startsWith('.')) {
      const target = resolve(join(file, '..'), spec);
      const domainDir = resolve(workflowsDir, '..', 'domain');
      if (!target.startsWith(workflowsDir + '/') && !target.startsWith(domainDir + '/')) problems.push({ file, line, message: `runtime import of ${spec} leaves workflows/ (use \`import type\`)` });
    } else if (!ALLOWED_PACKAGES.includes(spec)) {
      problems.push({ file, line, message: `runtime import of "${spec}" is not allowed in workflows/ (sandboxed, deterministic)` });
    }
  }
  return problems;
}

export function lintWorkflows(dir = join(ROOT, 'workflows')): LintProblem[] {
  return files(dir).flatMap((f) => lintWorkflowSource(f, readFileSync(f, 'utf8'), dir));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const problems = lintWorkflows();
  for (const p of problems) console.error(`${relative(ROOT, p.file)}:${p.line}: ${p.message}`);
  console.log(problems.length ? `${problems.length} problem(s)` : 'workflows/: no forbidden imports');
  process.exit(problems.length ? 1 : 0);
}
