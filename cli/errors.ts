// The two ways a command fails, and so the exit codes of runCli (cli/main.ts).

/** Bad usage: printed as one line, exit 2, nothing sent. */
export class UsageError extends Error {}

/** The API answered an error (or could not be reached): printed, exit 1. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly body?: unknown,
  ) {
    super(message);
  }
}
