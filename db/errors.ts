/**
 * Typed errors of the database layer. Activities map them onto ErrorType / ApplicationFailure,
 * the API onto status codes (Conflict -> 409, NotFound -> 404, Capacity -> 409/422,
 * Validation -> 400, DatabaseUnavailable -> 503). Messages name the thing that is wrong.
 */

export class DbError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A unique key is taken (name, id) or a row changed under us (stale optimistic-lock version). */
export class ConflictError extends DbError {
  constructor(
    message: string,
    readonly entity: string,
    readonly field: string,
    readonly value?: string | number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export class NotFoundError extends DbError {
  constructor(readonly entity: string, readonly id: string) {
    super(`${entity} ${id} not found`);
  }
}

/** Which resource ran out. 'host' = host refuses placements (maintenance or down). */
export type CapacityResource = 'cpu' | 'memory' | 'disk' | 'ip' | 'host';

export class CapacityError extends DbError {
  constructor(
    message: string,
    readonly resource: CapacityResource,
    readonly details: { hostId?: string; datastoreId?: string; networkId?: string; requested?: number; free?: number; capacity?: number } = {},
  ) {
    super(message);
  }
}

/** Bad input: names the field. Nothing was written. */
export class ValidationError extends DbError {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

/** The database cannot be reached or opened. The message is one line naming DATABASE_URL. */
export class DatabaseUnavailableError extends DbError {}
