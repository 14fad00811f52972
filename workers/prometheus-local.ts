// Prometheus for the one-machine production layout: deploy/prometheus.yml (the compose file's
// config) rendered with local static targets, started from Debian's `prometheus` package, and
// read back through its HTTP API. `promtool` checks metrics pages and rule files.
import { execa } from 'execa';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { isExecutable, PROJECT_ROOT } from './temporal-cli.js';
import { portFree, spawnLogged, stopChild } from './temporal-server.js';

export const PROMETHEUS_CONFIG = join(PROJECT_ROOT, 'deploy', 'prometheus.yml');
export const PROMETHEUS_RULES = join(PROJECT_ROOT, 'deploy', 'prometheus-rules.yml');

export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return (env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, name)).find(isExecutable);
}

/**
 * deploy/prometheus.yml with every job's `dns_sd_configs: [...]` line replaced by static targets
 * (`targets[job]`; a job with none is dropped), the rule file pointed at deploy/ and the intervals
 * shortened for a test. Throws when `targets` names a job the file does not have.
 */
export function renderPrometheusConfig(targets: Record<string, string[]>, opts: { interval?: string; rulesFile?: string } = {}): string {
  let text = readFileSync(PROMETHEUS_CONFIG, 'utf8');
  const seen = new Set<string>();
  text = text.replace(/^(\s*- job_name: ([\w-]+)[^\n]*\n)(\s+)dns_sd_configs: \[.*\]$/gm, (_all, head: string, job: string, indent: string) => {
    seen.add(job);
    const t = targets[job];
    return `${head}${indent}static_configs: [{ targets: [${(t ?? []).map((x) => `'${x}'`).join(', ')}] }]`;
  });
  for (const job of Object.keys(targets)) if (!seen.has(job)) throw new Error(`deploy/prometheus.yml has no job ${job}`);
  text = text.replace(/^rule_files: \[.*\]$/m, `rule_files: ['${opts.rulesFile ?? PROMETHEUS_RULES}']`);
  if (opts.interval) text = text.replace(/^global: .*$/m, `global: { scrape_interval: ${opts.interval}, evaluation_interval: ${opts.interval} }`);
  return text;
}

export interface LocalPrometheus {
  url: string;
  configFile: string;
  /** an instant query: the result vector */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  targets(): Promise<Array<{ scrapeUrl: string; health: string; labels: Record<string, string>; lastError: string }>>;
  stop(): Promise<void>;
}

export async function startPrometheus(o: { binary?: string; dir: string; port: number; targets: Record<string, string[]>; interval?: string }): Promise<LocalPrometheus> {
  const binary = o.binary ?? findOnPath('prometheus');
  if (!binary) throw new Error('prometheus not found on PATH (Debian: apt-get install prometheus)');
  if (!(await portFree(o.port))) throw new Error(`cannot start Prometheus: port ${o.port} is in use`);
  mkdirSync(o.dir, { recursive: true });
  const configFile = join(o.dir, 'prometheus.yml');
  writeFileSync(configFile, renderPrometheusConfig(o.targets, { interval: o.interval }));
  const url = `http://127.0.0.1:${o.port}`;
  const args = [`--config.file=${configFile}`, `--storage.tsdb.path=${join(o.dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${o.port}`, '--storage.tsdb.retention.time=7d'];
  const { child, exited } = spawnLogged(binary, args, {}, join(o.dir, 'prometheus.log'));
  const deadline = Date.now() + 30_000;
  while (!(await fetch(`${url}/-/ready`).then((r) => r.ok, () => false))) {
    const why = exited();
    if (why) throw new Error(`prometheus exited: ${why}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`prometheus not ready on ${url} within 30 s`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const api = async (path: string) => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: any; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? res.status}`);
    return body.data;
  };
  return {
    url,
    configFile,
    async query(expr) {
      const data = await api(`/api/v1/query?query=${encodeURIComponent(expr)}`);
      return data.result;
    },
    async targets() {
      const data = await api('/api/v1/targets?state=active');
      return data.activeTargets;
    },
    stop: () => stopChild(child, exited, 5000),
  };
}

/** `promtool check metrics` on one exposition page (promtool 2.42 reads stdin only): rc 0 clean, 3 lint findings, 1 unparsable. */
export async function promtoolCheckMetrics(page: string, promtool = findOnPath('promtool') ?? 'promtool'): Promise<{ exitCode: number; output: string }> {
  const r = await execa(promtool, ['check', 'metrics'], { input: page, reject: false });
  return { exitCode: r.exitCode ?? 1, output: `${r.stdout}\n${r.stderr}`.trim() };
}

export async function promtoolCheckRules(file = PROMETHEUS_RULES, promtool = findOnPath('promtool') ?? 'promtool'): Promise<{ exitCode: number; output: string }> {
  const r = await execa(promtool, ['check', 'rules', file], { reject: false });
  return { exitCode: r.exitCode ?? 1, output: `${r.stdout}\n${r.stderr}`.trim() };
}
