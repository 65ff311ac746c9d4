/**
 * What a TPM command is (go-tpm style): a typed value carrying its request (command code,
 * handles, authorizations, marshaled parameters) and the parser of its response. The executor
 * (executor.ts) sends any of them; the command definitions live in commands.ts, the flows that
 * chain several (EK/AK creation, quote with PCRs, NV reads in chunks) in flows.ts.
 */
import { TpmProtocolError, type TpmError } from './errors.js';
import { TpmWriter, type TpmReader } from './marshal.js';
import { PasswordSession, type Session } from './session.js';
import type { Ticket, TpmsAttest, TpmtPublic, TpmtSignature } from './structures.js';

/** A loaded object: its handle and Name (and public area when known). */
export interface TpmObject {
  handle: number;
  name: Buffer;
  public?: TpmtPublic;
  /** authValue to use when a command authorizes this object (default empty). */
  authValue?: Buffer;
}

export type HandleArg = number | TpmObject;

/** How a command authorizes a handle: a session (default: password) and/or the authValue. */
export interface AuthArg {
  session?: Session;
  auth?: Buffer;
}

export interface CmdHandle {
  handle: number;
  name?: Buffer;
}
export interface CmdAuth {
  session: Session;
  authValue: Buffer;
}
export interface CommandRequest {
  cc: number;
  handles?: CmdHandle[];
  /** Authorizations for handles[0..auths.length). */
  auths?: CmdAuth[];
  params?: Buffer;
  responseHandles?: number;
  /** Replaces the generic meaning of an error code with the caller's words. */
  errorContext?: (err: TpmError) => string | undefined;
}
export interface CommandResult {
  handles: number[];
  params: TpmReader;
  rawParams: Buffer;
}

export interface QuoteResult {
  /** TPMS_ATTEST bytes exactly as signed (what tpm2_quote -m writes). */
  attest: Buffer;
  parsed: TpmsAttest;
  signature: TpmtSignature;
  /** Marshaled TPMT_SIGNATURE (what tpm2_quote -s writes in tss format). */
  signatureBytes: Buffer;
}

export interface CreatePrimaryResult {
  object: TpmObject & { public: TpmtPublic };
  creationData: Buffer;
  creationHash: Buffer;
  creationTicket: Ticket;
}

export interface CreateResult {
  /** TPM2B_PRIVATE contents (without the size). */
  private: Buffer;
  public: TpmtPublic;
  creationData: Buffer;
  creationHash: Buffer;
  creationTicket: Ticket;
}

/** One TPM command as a value: its request and the typed reading of its response. */
export interface TpmCommand<R> {
  readonly request: CommandRequest;
  response(res: CommandResult): R;
}

/** A command with the given request whose response is parsed by `parse` (default: nothing is read from it). */
export function command<R = void>(request: CommandRequest, parse?: (res: CommandResult) => R): TpmCommand<R> {
  return { request, response: parse ?? (() => undefined as R) };
}

export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
export function params(fill: (w: TpmWriter) => void): Buffer {
  const w = new TpmWriter();
  fill(w);
  return w.finish();
}
/** Checks that a Name returned by the TPM matches the public area it returned with it. */
export function checkName(computed: () => Buffer, name: Buffer, what: string): void {
  let mine: Buffer;
  try {
    mine = computed();
  } catch (e) {
    throw new TpmProtocolError(`${what}: cannot compute the Name of the returned public area: ${(e as Error).message}`);
  }
  if (!mine.equals(name)) throw new TpmProtocolError(`${what}: returned Name does not match the returned public area`);
}

export function hex(h: number): string {
  return `0x${(h >>> 0).toString(16).padStart(8, '0')}`;
}

/** The authorization of a handle: the given session (default: password) with the given or the entity's authValue. */
export function authOf(entity: { authValue?: Buffer } | undefined, a?: AuthArg): CmdAuth {
  const authValue = a?.auth ?? entity?.authValue ?? Buffer.alloc(0);
  return { session: a?.session ?? new PasswordSession(authValue), authValue };
}

export function refOf(h: HandleArg): CmdHandle & { authValue?: Buffer } {
  return typeof h === 'number' ? { handle: h } : h;
}
