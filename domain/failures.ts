// Turns a failure chain (ActivityFailure -> ApplicationFailure -> ...) into the one sentence an
// operator needs: the innermost message, with its type. Pure: no @temporalio import.
export function describeFailure(err: unknown): string {
  let e = err as { message?: string; cause?: unknown; type?: string } | undefined;
  let last = e;
  while (e && typeof e === 'object') {
    last = e;
    e = e.cause as typeof e;
  }
  const msg = last?.message ?? String(err);
  return msg;
}

/** The ApplicationFailure type at the bottom of a failure chain, if any. */
export function failureType(err: unknown): string | undefined {
  let e = err as { cause?: unknown; type?: string } | undefined;
  let type: string | undefined;
  while (e && typeof e === 'object') {
    if (typeof e.type === 'string') type = e.type;
    e = e.cause as typeof e;
  }
  return type;
}
