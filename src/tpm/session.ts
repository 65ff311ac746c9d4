/** Authorization sessions: password (TPM_RS_PW), HMAC and policy sessions, and their HMACs. */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { TPM_ALG, type HashAlg } from './alg.js';
import { TPMA_SESSION, TPM_RS_PW } from './constants.js';
import { TpmProtocolError, TpmUsageError } from './errors.js';
import { hashOf, kdfa, trimAuth } from './crypto.js';
import type { TpmWriter } from './marshal.js';
import type { SymDef } from './structures.js';

/** Password authorization: the authValue goes in clear in the HMAC field. */
export class PasswordSession {
  readonly kind = 'password' as const;
  readonly handle = TPM_RS_PW;
  constructor(readonly password: Buffer = Buffer.alloc(0)) {}
}

/** An HMAC or policy session started with TPM2_StartAuthSession. */
export class AuthSession {
  readonly kind: 'hmac' | 'policy' | 'trial';
  readonly handle: number;
  readonly hash: HashAlg;
  readonly symmetric: SymDef;
  readonly sessionKey: Buffer;
  nonceTPM: Buffer;
  nonceCaller: Buffer;
  /** TPMA_SESSION bits sent with the next command; continueSession by default. */
  attributes: number = TPMA_SESSION.continueSession;
  /** Name of the entity the session is bound to (its authValue is already in sessionKey). */
  readonly bindName: Buffer | undefined;
  /** Policy sessions: set after TPM2_PolicyAuthValue / TPM2_PolicyPassword. */
  needsAuthValue = false;
  needsPassword = false;
  /** False once the TPM has flushed it (continueSession clear, or flushed explicitly). */
  active = true;

  constructor(init: {
    kind: 'hmac' | 'policy' | 'trial';
    handle: number;
    hash: HashAlg;
    symmetric: SymDef;
    sessionKey: Buffer;
    nonceTPM: Buffer;
    nonceCaller: Buffer;
    bindName?: Buffer;
  }) {
    this.kind = init.kind;
    this.handle = init.handle;
    this.hash = init.hash;
    this.symmetric = init.symmetric;
    this.sessionKey = init.sessionKey;
    this.nonceTPM = init.nonceTPM;
    this.nonceCaller = init.nonceCaller;
    this.bindName = init.bindName;
  }

  /** The HMAC key for an entity: sessionKey || authValue, where the rules include it. */
  hmacKey(entityAuth: Buffer, entityName: Buffer): Buffer {
    let include: boolean;
    if (this.kind === 'hmac') include = !(this.bindName && this.bindName.equals(entityName));
    else include = this.needsAuthValue;
    return include ? Buffer.concat([this.sessionKey, trimAuth(entityAuth)]) : this.sessionKey;
  }
}

export type Session = PasswordSession | AuthSession;

/** One handle the command authorizes, with what authorizes it. */
export interface Authorization {
  session: Session;
  /** authValue of the entity (password sessions send it; HMAC sessions key with it). */
  authValue: Buffer;
  /** Name of the entity (for the bound-entity rule). */
  entityName: Buffer;
}

/** Whether any session needs cpHash (so the command's handle Names must be known). */
export function needsCpHash(auths: readonly Authorization[]): boolean {
  return auths.some((a) => a.session.kind !== 'password');
}

/** Fresh caller nonces for the HMAC/policy sessions of a command (before parameter encryption). */
export function refreshNonces(auths: readonly Authorization[]): void {
  for (const a of auths) {
    const s = a.session;
    if (s.kind === 'password') continue;
    if (!s.active) throw new TpmProtocolError(`session 0x${s.handle.toString(16)} is no longer active`);
    s.nonceCaller = randomBytes(s.hash.size);
  }
}

/**
 * Parameter encryption (Part 1, 21): the TPM2B buffer of the first command parameter (decrypt
 * session) or first response parameter (encrypt session) with AES-CFB or XOR, keyed by
 * sessionKey || authValue. `toTpm` selects the nonce order (caller's first for commands).
 */
export function cryptParameter(a: Authorization, data: Buffer, toTpm: boolean): Buffer {
  const s = a.session;
  if (s.kind === 'password') throw new TpmUsageError('a password session cannot encrypt parameters');
  // Unlike the HMAC key, the authorized entity's authValue is used even by a session bound to it.
  const sessionValue = Buffer.concat([s.sessionKey, trimAuth(a.authValue)]);
  const [newer, older] = toTpm ? [s.nonceCaller, s.nonceTPM] : [s.nonceTPM, s.nonceCaller];
  const sym = s.symmetric;
  if (sym.alg === TPM_ALG.XOR) {
    const mask = kdfa(hashOf(sym.keyBits, 'XOR hash'), sessionValue, 'XOR', newer, older, data.length * 8);
    const out = Buffer.alloc(data.length);
    for (let i = 0; i < data.length; i++) out[i] = data[i]! ^ mask[i]!;
    return out;
  }
  if (sym.alg === TPM_ALG.AES && sym.mode === TPM_ALG.CFB) {
    const kv = kdfa(s.hash, sessionValue, 'CFB', newer, older, sym.keyBits + 128);
    const key = kv.subarray(0, sym.keyBits / 8);
    const iv = kv.subarray(sym.keyBits / 8);
    const c = toTpm ? createCipheriv(`aes-${sym.keyBits}-cfb`, key, iv) : createDecipheriv(`aes-${sym.keyBits}-cfb`, key, iv);
    return Buffer.concat([c.update(data), c.final()]);
  }
  throw new TpmUsageError(`session 0x${s.handle.toString(16)} has no symmetric algorithm for parameter encryption (start it with AES-CFB or XOR)`);
}

/** Writes one TPMS_AUTH_COMMAND (nonces refreshed beforehand by refreshNonces). */
export function writeAuthCommand(w: TpmWriter, a: Authorization, cpHash: (hash: HashAlg) => Buffer): void {
  const s = a.session;
  if (s.kind === 'password') {
    w.u32(s.handle).tpm2b(Buffer.alloc(0)).u8(TPMA_SESSION.continueSession).tpm2b(s.password.length ? s.password : a.authValue);
    return;
  }
  let hmac: Buffer;
  if (s.kind !== 'hmac' && s.needsPassword) hmac = trimAuth(a.authValue);
  else {
    const key = s.hmacKey(a.authValue, a.entityName);
    if (s.kind !== 'hmac' && key.length === 0) hmac = Buffer.alloc(0);
    else hmac = createHmac(s.hash.nodeName, key).update(cpHash(s.hash)).update(s.nonceCaller).update(s.nonceTPM).update(Buffer.from([s.attributes])).digest();
  }
  w.u32(s.handle).tpm2b(s.nonceCaller).u8(s.attributes).tpm2b(hmac);
}

/** Checks one TPMS_AUTH_RESPONSE and advances the session's nonceTPM. */
export function checkAuthResponse(
  a: Authorization,
  resp: { nonce: Buffer; attributes: number; hmac: Buffer },
  rpHash: (hash: HashAlg) => Buffer,
  index: number,
): void {
  const s = a.session;
  if (s.kind === 'password') {
    if (resp.nonce.length || resp.hmac.length) throw new TpmProtocolError(`session ${index}: password session answered with a nonce or HMAC`);
    return;
  }
  s.nonceTPM = resp.nonce;
  if (!(resp.attributes & TPMA_SESSION.continueSession)) s.active = false;
  if (s.kind !== 'hmac' && s.needsPassword) return;
  const key = s.hmacKey(a.authValue, a.entityName);
  if (s.kind !== 'hmac' && key.length === 0) {
    if (resp.hmac.length) throw new TpmProtocolError(`session ${index}: unexpected response HMAC from a policy session without a key`);
    return;
  }
  const expect = createHmac(s.hash.nodeName, key).update(rpHash(s.hash)).update(s.nonceTPM).update(s.nonceCaller).update(Buffer.from([resp.attributes])).digest();
  if (resp.hmac.length !== expect.length || !timingSafeEqual(resp.hmac, expect)) {
    throw new TpmProtocolError(`session ${index}: response HMAC does not verify (response tampered with or wrong authValue)`);
  }
}
