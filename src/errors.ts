/**
 * Errors in three tiers (docs/library.md, "Errors"):
 *  1. per packet: counted drops (`DropReason` in vtep.ts), never thrown;
 *  2. misuse and bad configuration: `UvtepError` with a stable `code`, thrown at the boundary;
 *  3. system errors from the native addon: `Error` with `code` (errno name), `errno`, `syscall`.
 */

export const ErrorCode = {
  InvalidVni: 'UVTEP_ERR_INVALID_VNI',
  InvalidAddress: 'UVTEP_ERR_INVALID_ADDRESS',
  InvalidPort: 'UVTEP_ERR_INVALID_PORT',
  InvalidMac: 'UVTEP_ERR_INVALID_MAC',
  InvalidMtu: 'UVTEP_ERR_INVALID_MTU',
  InvalidOption: 'UVTEP_ERR_INVALID_OPTION',
  FamilyMismatch: 'UVTEP_ERR_FAMILY_MISMATCH',
  FdbFull: 'UVTEP_ERR_FDB_FULL',
  FdbExists: 'UVTEP_ERR_FDB_EXISTS',
  FdbNotFound: 'UVTEP_ERR_FDB_NOT_FOUND',
  /** A VTEP with this VNI (on this port) or this TAP name exists already. */
  Exists: 'UVTEP_ERR_EXISTS',
  State: 'UVTEP_ERR_STATE',
  NoNative: 'UVTEP_ERR_NO_NATIVE',
  /** Another node holds this VTEP's address in etcd. */
  EtcdConflict: 'UVTEP_ERR_ETCD_CONFLICT',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class UvtepError extends Error {
  override name = 'UvtepError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Bad configuration or arguments: the message says what was given and what is accepted. */
export class ConfigError extends UvtepError {
  override name = 'ConfigError';
  /** The option (CLI flag or library field) the error is about, e.g. `vni`. */
  readonly option: string;
  constructor(code: ErrorCode, option: string, message: string) {
    super(code, message);
    this.option = option;
  }
}

/** An operation that is invalid in the object's current state (e.g. start() twice). */
export class StateError extends UvtepError {
  override name = 'StateError';
  constructor(message: string) {
    super(ErrorCode.State, message);
  }
}

/** Shape of the system errors the native addon throws (tier 3). */
export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

export function isSystemError(e: unknown): e is SystemError {
  return e instanceof Error && typeof (e as SystemError).syscall === 'string';
}
