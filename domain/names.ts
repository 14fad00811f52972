// Names that reach file systems, process arguments and cloud-init: lowercase letters, digits and
// '-', 1-63 characters, no leading or trailing '-' (a DNS label). Pure: the API, the workflows
// and the drivers share this one rule.
export const SAFE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function nameProblem(what: string, value: unknown): string | undefined {
  if (typeof value !== 'string' || !SAFE_NAME.test(value)) {
    return `${what} ${JSON.stringify(value)} is not a valid name (lowercase letters, digits and '-', 1-63 chars, no leading/trailing '-')`;
  }
  return undefined;
}
