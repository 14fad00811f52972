// A host agent (workers/qemu-agent.ts, workers/libvirt-agent.ts) as a child process: what the lab
// of `npm start` runs per host and what the qemu and libvirt tests SIGKILL. Resolves once the agent
// says it is running (its worker polls); rejects with everything it printed when it exits first or
// takes over a minute.
import { execa, type ResultPromise } from 'execa';
import { PROJECT_ROOT } from '../temporal-cli.js';

export interface AgentProcess {
  hostId: string;
  child: ResultPromise;
  /** everything the agent printed */
  output(): string;
  /** SIGKILL by default; resolves once the process is gone */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export type AgentKind = 'qemu' | 'libvirt';

export async function spawnHostAgent(kind: AgentKind, hostId: string, env: Record<string, string>, opts: { onLine?: (line: string) => void; timeoutMs?: number } = {}): Promise<AgentProcess> {
  const child = execa(process.execPath, ['--import', 'tsx', `workers/${kind}-agent.ts`], {
    cwd: PROJECT_ROOT,
    reject: false,
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let out = '';
  const onData = (d: Buffer) => {
    const s = d.toString();
    out += s;
    if (opts.onLine) for (const l of s.split('\n')) if (l.trim()) opts.onLine(l);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  while (!out.includes(' running ')) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await child;
      throw new Error(`${kind} agent ${hostId} did not start: ${out.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    hostId,
    child,
    output: () => out,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await child;
    },
  };
}

/** The qemu host agent of one lab host. */
export function spawnQemuAgent(hostId: string, env: Record<string, string>, opts: { onLine?: (line: string) => void; timeoutMs?: number } = {}): Promise<AgentProcess> {
  return spawnHostAgent('qemu', hostId, env, opts);
}
