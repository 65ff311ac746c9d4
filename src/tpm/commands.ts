/**
 * TPM 2.0 commands as typed values (TPM 2.0 Part 3), one function per command: it builds the
 * request and knows how to read the response. Nothing here talks to a TPM: TpmExecutor.run()
 * sends them, flows.ts chains them.
 */
import { randomBytes } from 'node:crypto';
import { TPM_ALG } from './alg.js';
import { TPM_CC, TPM_RH, TPM_SE, TPM_SU } from './constants.js';
import { handleName, hashOf, kdfa, nvName, objectName, protectSeed, trimAuth } from './crypto.js';
import { TPM_RC, TpmUsageError, type TpmError } from './errors.js';
import type { TpmReader } from './marshal.js';
import { AuthSession } from './session.js';
import {
  MAX,
  SCHEME_NULL,
  SYM_NULL,
  marshalContext,
  marshalDigestValues,
  marshalIdObject2B,
  marshalPcrSelectionList,
  marshalPublic2B,
  marshalScheme,
  marshalSensitiveCreate2B,
  marshalSymDef,
  parseAttest,
  readCapabilityData,
  readClockInfo,
  readContext,
  readDigestList,
  readDigestValues,
  readNvPublic2B,
  readPcrSelectionList,
  readPublic2B,
  readSignature,
  readTicket,
  type CapabilityData,
  type ClockInfo,
  type IdObject,
  type NvPublic,
  type PcrSelection,
  type Scheme,
  type SymDef,
  type TaggedHash,
  type Ticket,
  type TpmsContext,
  type TpmtPublic,
} from './structures.js';
import {
  checkName,
  command,
  hex,
  params,
  u16,
  u32,
  type CmdAuth,
  type CmdHandle,
  type CreatePrimaryResult,
  type CreateResult,
  type QuoteResult,
  type TpmCommand,
  type TpmObject,
} from './command.js';
import { TpmProtocolError } from './errors.js';

const NONE = Buffer.alloc(0);

// ------------------------------------------------------------ start-up and tests

export const Startup = (type: 'clear' | 'state'): TpmCommand<void> => command({ cc: TPM_CC.Startup, params: u16(type === 'clear' ? TPM_SU.CLEAR : TPM_SU.STATE) });
export const Shutdown = (type: 'clear' | 'state'): TpmCommand<void> => command({ cc: TPM_CC.Shutdown, params: u16(type === 'clear' ? TPM_SU.CLEAR : TPM_SU.STATE) });
export const SelfTest = (full: boolean): TpmCommand<void> => command({ cc: TPM_CC.SelfTest, params: Buffer.from([full ? 1 : 0]) });
/** Clears the failed-authorization counter (lockout auth). */
export const DictionaryAttackLockReset = (auth: CmdAuth): TpmCommand<void> => command({ cc: TPM_CC.DictionaryAttackLockReset, handles: [{ handle: TPM_RH.LOCKOUT }], auths: [auth] });

// ------------------------------------------------------------ capabilities, clock, random

export const GetCapability = (capability: number, property: number, count: number): TpmCommand<{ moreData: boolean; data: CapabilityData }> =>
  command({ cc: TPM_CC.GetCapability, params: params((w) => w.u32(capability).u32(property).u32(count)) }, (res) => {
    const moreData = res.params.u8('moreData') !== 0;
    const data = readCapabilityData(res.params);
    res.params.done('GetCapability response');
    if (data.capability !== capability) throw new TpmProtocolError(`TPM2_GetCapability: asked for capability ${capability}, got ${data.capability}`);
    return { moreData, data };
  });

/** Time since the last power-up and TPMS_CLOCK_INFO (resetCount, restartCount identify one boot of the TPM). */
export const ReadClock = (): TpmCommand<{ time: bigint } & ClockInfo> =>
  command({ cc: TPM_CC.ReadClock }, (res) => {
    const time = res.params.u64('TPMS_TIME_INFO.time');
    const clock = readClockInfo(res.params);
    res.params.done('ReadClock response');
    return { time, ...clock };
  });

/** At most MAX.DIGEST bytes per command (the TPM may return fewer). */
export const GetRandom = (bytes: number): TpmCommand<Buffer> =>
  command({ cc: TPM_CC.GetRandom, params: u16(Math.min(bytes, MAX.DIGEST)) }, (res) => {
    const b = res.params.tpm2b('randomBytes', MAX.DIGEST);
    res.params.done('GetRandom response');
    return b;
  });

// ------------------------------------------------------------ PCRs

/** One TPM2_PCR_Read as the TPM answers it (at most 8 digests, possibly a partial selection). */
export const PcrRead = (selection: PcrSelection[]): TpmCommand<{ updateCounter: number; selection: PcrSelection[]; digests: Buffer[] }> =>
  command({ cc: TPM_CC.PCR_Read, params: params((w) => marshalPcrSelectionList(w, selection)) }, (res) => {
    const updateCounter = res.params.u32('pcrUpdateCounter');
    const sel = readPcrSelectionList(res.params);
    const digests = readDigestList(res.params);
    res.params.done('PCR_Read response');
    return { updateCounter, selection: sel, digests };
  });

/** The words for a PCR command's error: locality, or a PCR that does not exist. */
export function pcrContext(pcr: number, verb: string, locality: number): (e: TpmError) => string | undefined {
  return (e) => {
    if (e.base === TPM_RC.LOCALITY) return `PCR ${pcr} cannot be ${verb} at locality ${locality}`;
    if (e.base === 0x084 /* VALUE */ || e.base === 0x08b /* HANDLE */) return `PCR ${pcr} does not exist or cannot be ${verb}`;
    return undefined;
  };
}

export const PcrExtend = (pcr: number, digests: TaggedHash[], auth: CmdAuth, locality: number): TpmCommand<void> =>
  command({ cc: TPM_CC.PCR_Extend, handles: [{ handle: pcr }], auths: [auth], params: params((w) => marshalDigestValues(w, digests)), errorContext: pcrContext(pcr, 'extended', locality) });

/** The TPM hashes data (≤ 1024 bytes) in every bank and extends. */
export const PcrEvent = (pcr: number, data: Uint8Array, auth: CmdAuth, locality: number): TpmCommand<TaggedHash[]> => {
  if (data.length > MAX.EVENT) throw new TpmUsageError(`PCR_Event data of ${data.length} bytes exceeds ${MAX.EVENT}`);
  return command({ cc: TPM_CC.PCR_Event, handles: [{ handle: pcr }], auths: [auth], params: params((w) => w.tpm2b(data)), errorContext: pcrContext(pcr, 'extended', locality) }, (res) => {
    const out = readDigestValues(res.params);
    res.params.done('PCR_Event response');
    return out;
  });
};

export const PcrReset = (pcr: number, auth: CmdAuth, locality: number): TpmCommand<void> =>
  command({ cc: TPM_CC.PCR_Reset, handles: [{ handle: pcr }], auths: [auth], errorContext: pcrContext(pcr, 'reset', locality) });

// ------------------------------------------------------------ objects

export interface SensitiveInput {
  userAuth?: Buffer;
  data?: Buffer;
}

export const CreatePrimary = (hierarchy: number, template: TpmtPublic, auth: CmdAuth, opts: SensitiveInput & { outsideInfo?: Buffer; creationPcrs?: PcrSelection[] } = {}): TpmCommand<CreatePrimaryResult> =>
  command(
    {
      cc: TPM_CC.CreatePrimary,
      handles: [{ handle: hierarchy }],
      auths: [auth],
      params: params((w) => {
        marshalSensitiveCreate2B(w, { userAuth: opts.userAuth ?? NONE, data: opts.data ?? NONE });
        marshalPublic2B(w, template);
        w.tpm2b(opts.outsideInfo ?? NONE);
        marshalPcrSelectionList(w, opts.creationPcrs ?? []);
      }),
      responseHandles: 1,
    },
    (res) => {
      const r = res.params;
      const pub = readPublic2B(r);
      const creationData = r.tpm2b('creationData', MAX.CREATION_DATA);
      const creationHash = r.tpm2b('creationHash', MAX.DIGEST);
      const creationTicket = readTicket(r, 'creationTicket');
      const name = r.tpm2b('name', MAX.NAME);
      r.done('CreatePrimary response');
      checkName(() => objectName(pub), name, 'TPM2_CreatePrimary');
      return { object: { handle: res.handles[0]!, name, public: pub, ...(opts.userAuth ? { authValue: opts.userAuth } : {}) }, creationData, creationHash, creationTicket };
    },
  );

export const Create = (parent: TpmObject, template: TpmtPublic, auth: CmdAuth, opts: SensitiveInput = {}): TpmCommand<CreateResult> =>
  command(
    {
      cc: TPM_CC.Create,
      handles: [parent],
      auths: [auth],
      params: params((w) => {
        marshalSensitiveCreate2B(w, { userAuth: opts.userAuth ?? NONE, data: opts.data ?? NONE });
        marshalPublic2B(w, template);
        w.tpm2b(NONE);
        marshalPcrSelectionList(w, []);
      }),
    },
    (res) => {
      const r = res.params;
      const priv = r.tpm2b('outPrivate', MAX.PRIVATE);
      const pub = readPublic2B(r);
      const creationData = r.tpm2b('creationData', MAX.CREATION_DATA);
      const creationHash = r.tpm2b('creationHash', MAX.DIGEST);
      const creationTicket = readTicket(r, 'creationTicket');
      r.done('Create response');
      return { private: priv, public: pub, creationData, creationHash, creationTicket };
    },
  );

export const Load = (parent: TpmObject, priv: Buffer, pub: TpmtPublic, auth: CmdAuth, authValue?: Buffer): TpmCommand<TpmObject & { public: TpmtPublic }> =>
  command(
    {
      cc: TPM_CC.Load,
      handles: [parent],
      auths: [auth],
      params: params((w) => {
        w.tpm2b(priv);
        marshalPublic2B(w, pub);
      }),
      responseHandles: 1,
    },
    (res) => {
      const name = res.params.tpm2b('name', MAX.NAME);
      res.params.done('Load response');
      checkName(() => objectName(pub), name, 'TPM2_Load');
      return { handle: res.handles[0]!, name, public: pub, ...(authValue ? { authValue } : {}) };
    },
  );

/** Makes a transient object persistent at `persistentHandle`, or with a persistent object, removes it. */
export const EvictControl = (hierarchy: number, object: TpmObject, persistentHandle: number, auth: CmdAuth): TpmCommand<number> =>
  command(
    {
      cc: TPM_CC.EvictControl,
      handles: [{ handle: hierarchy }, object],
      auths: [auth],
      params: u32(persistentHandle),
      errorContext: (e) => (e.base === 0x14c ? `persistent handle ${hex(persistentHandle)} is already in use` : undefined),
    },
    () => persistentHandle,
  );

/** Loads a public area only (no private part), e.g. to compute or check its Name. */
export const LoadExternal = (pub: TpmtPublic, hierarchy: number): TpmCommand<TpmObject & { public: TpmtPublic }> =>
  command(
    {
      cc: TPM_CC.LoadExternal,
      params: params((w) => {
        w.u16(0); // no sensitive area
        marshalPublic2B(w, pub);
        w.u32(hierarchy);
      }),
      responseHandles: 1,
    },
    (res) => {
      const name = res.params.tpm2b('name', MAX.NAME);
      res.params.done('LoadExternal response');
      return { handle: res.handles[0]!, name, public: pub };
    },
  );

export const ReadPublic = (handle: number): TpmCommand<{ public: TpmtPublic; name: Buffer; qualifiedName: Buffer }> =>
  command({ cc: TPM_CC.ReadPublic, handles: [{ handle }] }, (res) => {
    const pub = readPublic2B(res.params);
    const name = res.params.tpm2b('name', MAX.NAME);
    const qualifiedName = res.params.tpm2b('qualifiedName', MAX.NAME);
    res.params.done('ReadPublic response');
    checkName(() => objectName(pub), name, `TPM2_ReadPublic ${hex(handle)}`);
    return { public: pub, name, qualifiedName };
  });

// ------------------------------------------------------------ attestation

function attestResult(r: TpmReader, what: string): QuoteResult {
  const attest = r.tpm2b('TPM2B_ATTEST', MAX.ATTEST);
  const sigStart = r.offset;
  const signature = readSignature(r);
  const signatureBytes = Buffer.from(r.buf.subarray(sigStart, r.offset));
  r.done(`${what} response`);
  return { attest, parsed: parseAttest(attest), signature, signatureBytes };
}

/** A quote over a PCR selection; scheme NULL uses the key's own scheme. */
export const Quote = (signer: TpmObject, selection: PcrSelection[], qualifyingData: Uint8Array, auth: CmdAuth, scheme: Scheme = SCHEME_NULL): TpmCommand<QuoteResult> => {
  if (qualifyingData.length > MAX.DATA) throw new TpmUsageError(`quote qualifying data of ${qualifyingData.length} bytes exceeds ${MAX.DATA}`);
  return command(
    {
      cc: TPM_CC.Quote,
      handles: [signer],
      auths: [auth],
      params: params((w) => {
        w.tpm2b(qualifyingData);
        marshalScheme(w, scheme);
        marshalPcrSelectionList(w, selection);
      }),
    },
    (res) => attestResult(res.params, 'Quote'),
  );
};

/** `signer` attests that `object` is loaded in this TPM. */
export const Certify = (object: TpmObject, signer: TpmObject, qualifyingData: Uint8Array, objectAuth: CmdAuth, signerAuth: CmdAuth, scheme: Scheme = SCHEME_NULL): TpmCommand<QuoteResult> =>
  command(
    {
      cc: TPM_CC.Certify,
      handles: [object, signer],
      auths: [objectAuth, signerAuth],
      params: params((w) => {
        w.tpm2b(qualifyingData);
        marshalScheme(w, scheme);
      }),
    },
    (res) => attestResult(res.params, 'Certify'),
  );

// ------------------------------------------------------------ sessions and policy

export interface StartAuthSessionOptions {
  type?: 'hmac' | 'policy' | 'trial';
  hashAlg?: number;
  tpmKey?: TpmObject & { public: TpmtPublic };
  bind?: { handle: number; name?: Buffer; authValue?: Buffer };
  symmetric?: SymDef;
  attributes?: number;
}

/** `tpmKey` salts the session; `bind` (whose Name the caller resolved) binds it to an entity whose authValue then keys the session. */
export const StartAuthSession = (opts: StartAuthSessionOptions, bindName: Buffer | undefined): TpmCommand<AuthSession> => {
  const type = opts.type ?? 'hmac';
  const hash = hashOf(opts.hashAlg ?? TPM_ALG.SHA256, 'session hash');
  const symmetric = opts.symmetric ?? SYM_NULL;
  const nonceCaller = randomBytes(hash.size);
  const salt = opts.tpmKey ? protectSeed(opts.tpmKey.public, 'SECRET') : undefined;
  return command(
    {
      cc: TPM_CC.StartAuthSession,
      handles: [{ handle: opts.tpmKey?.handle ?? TPM_RH.NULL }, { handle: opts.bind?.handle ?? TPM_RH.NULL }],
      params: params((w) => {
        w.tpm2b(nonceCaller).tpm2b(salt?.encrypted ?? NONE);
        w.u8(type === 'hmac' ? TPM_SE.HMAC : type === 'policy' ? TPM_SE.POLICY : TPM_SE.TRIAL);
        marshalSymDef(w, symmetric);
        w.u16(hash.id);
      }),
      responseHandles: 1,
    },
    (res) => {
      const nonceTPM = res.params.tpm2b('nonceTPM', MAX.NONCE);
      res.params.done('StartAuthSession response');
      let sessionKey: Buffer = NONE;
      if (opts.bind || salt) {
        const keyIn = Buffer.concat([trimAuth(opts.bind?.authValue ?? NONE), salt?.seed ?? NONE]);
        sessionKey = kdfa(hash, keyIn, 'ATH', nonceTPM, nonceCaller, hash.size * 8);
      }
      const s = new AuthSession({ kind: type, handle: res.handles[0]!, hash, symmetric, sessionKey, nonceTPM, nonceCaller, ...(bindName ? { bindName } : {}) });
      if (opts.attributes !== undefined) s.attributes = opts.attributes;
      return s;
    },
  );
};

export interface PolicySecretOptions {
  includeNonce?: boolean;
  cpHashA?: Buffer;
  policyRef?: Buffer;
  expiration?: number;
}

/** Asserts knowledge of `authEntity`'s authorization in a policy session. */
export const PolicySecret = (authEntity: CmdHandle, session: AuthSession, auth: CmdAuth, opts: PolicySecretOptions = {}): TpmCommand<{ timeout: Buffer; ticket: Ticket }> =>
  command(
    {
      cc: TPM_CC.PolicySecret,
      handles: [authEntity, { handle: session.handle, name: handleName(session.handle) }],
      auths: [auth],
      params: params((w) => {
        w.tpm2b(opts.includeNonce ? session.nonceTPM : NONE);
        w.tpm2b(opts.cpHashA ?? NONE);
        w.tpm2b(opts.policyRef ?? NONE);
        w.i32(opts.expiration ?? 0);
      }),
    },
    (res) => {
      const timeout = res.params.tpm2b('timeout', MAX.TIMEOUT);
      const ticket = readTicket(res.params, 'policyTicket');
      res.params.done('PolicySecret response');
      return { timeout, ticket };
    },
  );

export const PolicyGetDigest = (session: AuthSession): TpmCommand<Buffer> =>
  command({ cc: TPM_CC.PolicyGetDigest, handles: [{ handle: session.handle }] }, (res) => {
    const d = res.params.tpm2b('policyDigest', MAX.DIGEST);
    res.params.done('PolicyGetDigest response');
    return d;
  });

/** Binds the policy to PCR values; with `pcrDigest` the check is deferred to the command being authorized. */
export const PolicyPcr = (session: AuthSession, selection: PcrSelection[], pcrDigest: Buffer): TpmCommand<void> =>
  command({
    cc: TPM_CC.PolicyPCR,
    handles: [{ handle: session.handle }],
    params: params((w) => {
      w.tpm2b(pcrDigest);
      marshalPcrSelectionList(w, selection);
    }),
    errorContext: (e) => (e.base === 0x09d ? 'PCR values differ from those the policy expects' : undefined),
  });

/** The data of a sealed (keyed-hash) object. */
export const Unseal = (item: TpmObject, auth: CmdAuth): TpmCommand<Buffer> =>
  command({ cc: TPM_CC.Unseal, handles: [item], auths: [auth], errorContext: (e) => (e.base === 0x09d ? 'the sealing policy is not satisfied (PCR values changed?)' : undefined) }, (res) => {
    const data = res.params.tpm2b('outData', MAX.SENSITIVE_DATA);
    res.params.done('Unseal response');
    return data;
  });

/** The object's authValue then keys the session HMAC. */
export const PolicyAuthValue = (session: AuthSession): TpmCommand<void> =>
  command({ cc: TPM_CC.PolicyAuthValue, handles: [{ handle: session.handle }] }, () => {
    session.needsAuthValue = true;
  });

/** The authValue is then sent in clear. */
export const PolicyPassword = (session: AuthSession): TpmCommand<void> =>
  command({ cc: TPM_CC.PolicyPassword, handles: [{ handle: session.handle }] }, () => {
    session.needsPassword = true;
  });

export const PolicyRestart = (session: AuthSession): TpmCommand<void> =>
  command({ cc: TPM_CC.PolicyRestart, handles: [{ handle: session.handle }] }, () => {
    session.needsAuthValue = false;
    session.needsPassword = false;
  });

// ------------------------------------------------------------ contexts

export const FlushContext = (h: number | { handle: number } | AuthSession): TpmCommand<void> =>
  command({ cc: TPM_CC.FlushContext, params: u32(typeof h === 'number' ? h : h.handle) }, () => {
    if (h instanceof AuthSession) h.active = false;
  });

export const ContextSave = (handle: number): TpmCommand<TpmsContext> =>
  command({ cc: TPM_CC.ContextSave, handles: [{ handle }] }, (res) => {
    const ctx = readContext(res.params);
    res.params.done('ContextSave response');
    return ctx;
  });

export const ContextLoad = (ctx: TpmsContext): TpmCommand<number> =>
  command({ cc: TPM_CC.ContextLoad, params: params((w) => marshalContext(w, ctx)), responseHandles: 1 }, (res) => {
    res.params.done('ContextLoad response');
    return res.handles[0]!;
  });

// ------------------------------------------------------------ NV

export const NvReadPublic = (index: number): TpmCommand<{ public: NvPublic; name: Buffer }> =>
  command({ cc: TPM_CC.NV_ReadPublic, handles: [{ handle: index }], errorContext: (e) => (e.base === 0x08b ? `NV index ${hex(index)} is not defined` : undefined) }, (res) => {
    const pub = readNvPublic2B(res.params);
    const name = res.params.tpm2b('nvName', MAX.NAME);
    res.params.done('NV_ReadPublic response');
    checkName(() => nvName(pub), name, `TPM2_NV_ReadPublic ${hex(index)}`);
    return { public: pub, name };
  });

/** One chunk of an NV index (at most TPM_PT_NV_BUFFER_MAX bytes); `authHandle` authorizes the read. */
export const NvRead = (authHandle: CmdHandle, index: { handle: number; name: Buffer }, size: number, offset: number, auth: CmdAuth): TpmCommand<Buffer> =>
  command({ cc: TPM_CC.NV_Read, handles: [authHandle, index], auths: [auth], params: params((w) => w.u16(size).u16(offset)) }, (res) => {
    const data = res.params.tpm2b('data', MAX.NV_BUFFER);
    res.params.done('NV_Read response');
    if (data.length !== size) throw new TpmProtocolError(`TPM2_NV_Read ${hex(index.handle)}: asked for ${size} bytes at ${offset}, got ${data.length}`);
    return data;
  });

// ------------------------------------------------------------ credentials

/** Recovers a credential made for `key` (EK) and `activate` (AK). */
export const ActivateCredential = (activate: TpmObject, key: TpmObject, credentialBlob: IdObject, secret: Buffer, activateAuth: CmdAuth, keyAuth: CmdAuth): TpmCommand<Buffer> =>
  command(
    {
      cc: TPM_CC.ActivateCredential,
      handles: [activate, key],
      auths: [activateAuth, keyAuth],
      params: params((w) => {
        marshalIdObject2B(w, credentialBlob);
        w.tpm2b(secret);
      }),
    },
    (res) => {
      const cert = res.params.tpm2b('certInfo', MAX.DIGEST);
      res.params.done('ActivateCredential response');
      return cert;
    },
  );

// ------------------------------------------------------------ hashing

export const HashSequenceStart = (hashAlg: number, auth: Buffer): TpmCommand<TpmObject> =>
  command({ cc: TPM_CC.HashSequenceStart, params: params((w) => w.tpm2b(auth).u16(hashAlg)), responseHandles: 1 }, (res) => {
    res.params.done('HashSequenceStart response');
    return { handle: res.handles[0]!, name: handleName(res.handles[0]!), authValue: auth };
  });

export const SequenceUpdate = (seq: TpmObject, data: Uint8Array, auth: CmdAuth): TpmCommand<void> => {
  if (data.length > MAX.MAX_BUFFER) throw new TpmUsageError(`SequenceUpdate buffer of ${data.length} bytes exceeds ${MAX.MAX_BUFFER}`);
  return command({ cc: TPM_CC.SequenceUpdate, handles: [seq], auths: [auth], params: params((w) => w.tpm2b(data)) });
};

export const SequenceComplete = (seq: TpmObject, data: Uint8Array, hierarchy: number, auth: CmdAuth): TpmCommand<{ digest: Buffer; ticket: Ticket }> =>
  command({ cc: TPM_CC.SequenceComplete, handles: [seq], auths: [auth], params: params((w) => w.tpm2b(data).u32(hierarchy)) }, (res) => {
    const d = res.params.tpm2b('result', MAX.DIGEST);
    const ticket = readTicket(res.params, 'validation');
    res.params.done('SequenceComplete response');
    return { digest: d, ticket };
  });

/** Completes an event sequence: the data hashed in every active bank and extended into `pcr`. */
export const EventSequenceComplete = (pcr: number, seq: TpmObject, data: Uint8Array, pcrAuth: CmdAuth, seqAuth: CmdAuth, locality: number): TpmCommand<TaggedHash[]> =>
  command(
    { cc: TPM_CC.EventSequenceComplete, handles: [{ handle: pcr }, seq], auths: [pcrAuth, seqAuth], params: params((w) => w.tpm2b(data)), errorContext: pcrContext(pcr, 'extended', locality) },
    (res) => {
      const out = readDigestValues(res.params);
      res.params.done('EventSequenceComplete response');
      return out;
    },
  );
