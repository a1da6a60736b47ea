/** Typed failures of the registry client; messages never carry credentials. */

/** Base class of every registry client failure. */
export class RegistryError extends Error {
  override name = "RegistryError";
  constructor(message: string, readonly status?: number, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** An image reference that does not parse. */
export class InvalidReferenceError extends RegistryError {
  override name = "InvalidReferenceError";
}

/** A digest that is not `sha256:<64 hex>` or `sha512:<128 hex>`. */
export class InvalidDigestError extends RegistryError {
  override name = "InvalidDigestError";
}

/** The registry answered 404 (or the platform/manifest asked for does not exist). */
export class NotFoundError extends RegistryError {
  override name = "NotFoundError";
}

/** The registry refused our credentials (401/403 after authenticating). */
export class UnauthorizedError extends RegistryError {
  override name = "UnauthorizedError";
  /** True once the message says where the refused credentials came from. */
  explained = false;

  /** The same refusal with `reason` (which keychain was tried; never a secret) appended. */
  withReason(reason: string): UnauthorizedError {
    const e = new UnauthorizedError(`${this.message} (${reason})`, this.status, {
      cause: this.cause,
    });
    e.explained = true;
    return e;
  }
}

/** Fetched content does not match its digest or size. */
export class DigestMismatchError extends RegistryError {
  override name = "DigestMismatchError";
}

/** A request did not complete within its time limit. */
export class TimeoutError extends RegistryError {
  override name = "TimeoutError";
}
