// The host activity behind GET /v1/vms/:id/console: the last lines of a VM's serial console from
// this host's driver. Read-only and cheap, so a failed read is retried once and then reported.
import type { ConsoleTail } from '../domain/console.js';
import { tailProblem } from '../domain/console.js';
import { ErrorType, failure, withFailureMapping } from './errors.js';

/** What a driver offers to read consoles (the sim driver has it; the qemu agent composes its reader). */
export interface ConsoleReader {
  consoleTail(vmId: string, tail: number): Promise<ConsoleTail>;
}

export function createConsoleActivities(deps: { hostId: string; reader?: ConsoleReader }) {
  return withFailureMapping({
    async consoleTail(input: { vmId: string; tail: number }): Promise<ConsoleTail> {
      const problem = tailProblem(input.tail);
      if (problem) throw failure(ErrorType.InvalidArgument, problem);
      if (!deps.reader) throw failure(ErrorType.InvalidState, `host ${deps.hostId}'s driver has no console to read`);
      return deps.reader.consoleTail(input.vmId, input.tail);
    },
  });
}

export type ConsoleActivities = ReturnType<typeof createConsoleActivities>;

/** The driver itself when it reads consoles (duck-typed: the method is optional for drivers). */
export function consoleReaderOf(driver: object): ConsoleReader | undefined {
  const d = driver as Partial<ConsoleReader>;
  return typeof d.consoleTail === 'function' ? { consoleTail: (vmId, tail) => d.consoleTail!.call(driver, vmId, tail) } : undefined;
}
