/**
 * The executor: sends any TpmCommand over a TpmTransport — framing, authorization sessions
 * (HMAC, policy, password), parameter encryption on the first session, decoded errors, retries of
 * transient warnings (RETRY, YIELDED, TESTING) and per-command timeouts. It knows no command
 * beyond the two it needs to learn an entity's Name.
 */
import { digest, type HashAlg } from './alg.js';
import { TPMA_SESSION, TPM_CC, TPM_HT, TPM_ST, commandName } from './constants.js';
import { handleName } from './crypto.js';
import { TPM_RC, TpmError, TpmUsageError } from './errors.js';
import { TpmReader, TpmWriter } from './marshal.js';
import { checkAuthResponse, cryptParameter, needsCpHash, refreshNonces, writeAuthCommand, type Authorization, type AuthSession } from './session.js';
import { MAX } from './structures.js';
import type { TpmTransport } from './transport/transport.js';
import { u32, type CmdHandle, type CommandRequest, type CommandResult, type TpmCommand } from './command.js';
import { NvReadPublic, ReadPublic } from './commands.js';

export interface TpmClientOptions {
  /** Per-command timeout (default: the transport's, 30 s); key creation gets at least 180 s. */
  timeoutMs?: number;
  /** Retries for TPM_RC_RETRY / TPM_RC_YIELDED / TPM_RC_TESTING (default 10). */
  retries?: number;
  /** Milliseconds before the first retry; doubles up to 1 s (default 10). */
  retryDelayMs?: number;
}

const RETRYABLE = new Set<number>([TPM_RC.RETRY, TPM_RC.YIELDED, TPM_RC.TESTING]);
/** Key generation on a hardware TPM can take tens of seconds (RSA prime search). */
const SLOW_COMMANDS = new Set<number>([TPM_CC.CreatePrimary, TPM_CC.Create, TPM_CC.CreateLoaded]);
const SLOW_TIMEOUT_MS = 180_000;

export class TpmExecutor {
  private locality = 0;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly timeoutMs: number | undefined;
  /** The TPM_PT_FIXED group, read once (flows.ts getFixedProperties): they never change. */
  fixedProps: Map<number, number> | undefined;

  constructor(
    readonly transport: TpmTransport,
    opts: TpmClientOptions = {},
  ) {
    this.retries = opts.retries ?? 10;
    this.retryDelayMs = opts.retryDelayMs ?? 10;
    this.timeoutMs = opts.timeoutMs;
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  /** Locality of the commands that follow (swtpm: through its control channel). */
  async setLocality(locality: number): Promise<void> {
    if (!this.transport.setLocality) throw new TpmUsageError(`${this.transport.description}: locality cannot be chosen on this transport`);
    await this.transport.setLocality(locality);
    this.locality = locality;
  }
  get currentLocality(): number {
    return this.locality;
  }

  /** Sends a command value and reads its typed response. */
  async run<R>(cmd: TpmCommand<R>): Promise<R> {
    return cmd.response(await this.execute(cmd.request));
  }

  /** The Name of an entity (for cpHash and bound sessions): given, read from the TPM, or the handle itself. */
  async nameOf(h: CmdHandle): Promise<Buffer> {
    if (h.name) return h.name;
    const ht = h.handle >>> 24;
    if (ht === TPM_HT.TRANSIENT || ht === TPM_HT.PERSISTENT) return (await this.run(ReadPublic(h.handle))).name;
    if (ht === TPM_HT.NV_INDEX) return (await this.run(NvReadPublic(h.handle))).name;
    return handleName(h.handle);
  }

  /** Sends one command; decodes errors, retries transient warnings, runs sessions. */
  async execute(req: CommandRequest): Promise<CommandResult> {
    const handles = req.handles ?? [];
    const auths = req.auths ?? [];
    const body = req.params ?? Buffer.alloc(0);
    if (auths.length > handles.length) throw new TpmUsageError(`${commandName(req.cc)}: more authorizations than handles`);
    const authorizations: Authorization[] = [];
    let names: Buffer[] = [];
    const withSessions = needsCpHash(auths.map((a) => ({ session: a.session, authValue: a.authValue, entityName: Buffer.alloc(0) })));
    if (withSessions) names = await Promise.all(handles.map((h) => this.nameOf(h)));
    auths.forEach((a, i) => authorizations.push({ session: a.session, authValue: a.authValue, entityName: names[i] ?? handleName(handles[i]!.handle) }));
    const isSession = (a: Authorization): a is Authorization & { session: AuthSession } => a.session.kind !== 'password';
    const decryptAuth = authorizations.find((a) => isSession(a) && a.session.attributes & TPMA_SESSION.decrypt);
    const encryptAuth = authorizations.find((a) => isSession(a) && a.session.attributes & TPMA_SESSION.encrypt);
    if ((decryptAuth && decryptAuth !== authorizations[0]) || (encryptAuth && encryptAuth !== authorizations[0])) {
      throw new TpmUsageError(`${commandName(req.cc)}: parameter encryption is supported on the first session only`);
    }

    for (let attempt = 0; ; attempt++) {
      refreshNonces(authorizations);
      let sent = body;
      if (decryptAuth) {
        if (body.length < 2 || body.readUInt16BE(0) + 2 > body.length) throw new TpmUsageError(`${commandName(req.cc)}: first parameter is not a TPM2B, it cannot be encrypted`);
        const n = body.readUInt16BE(0);
        sent = Buffer.concat([body.subarray(0, 2), cryptParameter(decryptAuth, body.subarray(2, 2 + n), true), body.subarray(2 + n)]);
      }
      const cpHashes = new Map<number, Buffer>();
      const cpHash = (h: HashAlg): Buffer => {
        let v = cpHashes.get(h.id);
        if (!v) cpHashes.set(h.id, (v = digest(h, u32(req.cc), ...names, sent)));
        return v;
      };
      const w = new TpmWriter(64 + body.length);
      w.u16(auths.length ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(0).u32(req.cc);
      for (const h of handles) w.u32(h.handle);
      if (auths.length) {
        const aw = new TpmWriter();
        for (const a of authorizations) writeAuthCommand(aw, a, cpHash);
        const area = aw.finish();
        w.u32(area.length).bytes(area);
      }
      w.bytes(sent);
      const cmd = w.finish();
      cmd.writeUInt32BE(cmd.length, 2);

      const resp = await this.transport.send(cmd, SLOW_COMMANDS.has(req.cc) ? { timeoutMs: Math.max(SLOW_TIMEOUT_MS, this.timeoutMs ?? 0) } : this.timeoutMs ? { timeoutMs: this.timeoutMs } : {});
      const r = new TpmReader(resp, `${commandName(req.cc)} response`);
      const tag = r.u16('tag');
      const size = r.u32('responseSize');
      if (size !== resp.length) r.fail('responseSize', `says ${size} bytes, ${resp.length} received`, 2);
      const rc = r.u32('responseCode');
      if (rc !== 0) {
        if (resp.length !== 10) r.fail('responseCode', `error response 0x${rc.toString(16)} carries ${resp.length - 10} extra byte(s)`, 6);
        const err = new TpmError(rc, req.cc);
        if (RETRYABLE.has(err.base) && attempt < this.retries) {
          await new Promise((res) => setTimeout(res, Math.min(1000, this.retryDelayMs * 2 ** attempt)));
          continue;
        }
        const ctx = req.errorContext?.(err);
        throw ctx ? new TpmError(rc, req.cc, ctx) : err;
      }
      const wantTag = auths.length ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS;
      if (tag !== wantTag) r.fail('tag', `0x${tag.toString(16)} where 0x${wantTag.toString(16)} was expected`, 0);
      const outHandles: number[] = [];
      for (let i = 0; i < (req.responseHandles ?? 0); i++) outHandles.push(r.u32(`handle[${i}]`));
      let rawParams: Buffer;
      let paramsBase: number;
      if (auths.length) {
        const psize = r.u32('parameterSize');
        paramsBase = r.offset;
        rawParams = r.bytes(psize, 'parameters');
        const rp = new Map<number, Buffer>();
        const rpHash = (h: HashAlg): Buffer => {
          let v = rp.get(h.id);
          if (!v) rp.set(h.id, (v = digest(h, u32(0), u32(req.cc), rawParams)));
          return v;
        };
        authorizations.forEach((a, i) => {
          const nonce = r.tpm2b(`authResponse[${i}].nonce`, MAX.NONCE);
          const attributes = r.u8(`authResponse[${i}].sessionAttributes`);
          const hmac = r.tpm2b(`authResponse[${i}].hmac`, MAX.DIGEST);
          checkAuthResponse(a, { nonce, attributes, hmac }, rpHash, i);
        });
        r.done('response');
        if (encryptAuth) {
          if (rawParams.length < 2 || rawParams.readUInt16BE(0) + 2 > rawParams.length) r.fail('parameters', 'first response parameter is not a TPM2B, it cannot be decrypted', paramsBase);
          const n = rawParams.readUInt16BE(0);
          rawParams = Buffer.concat([rawParams.subarray(0, 2), cryptParameter(encryptAuth, rawParams.subarray(2, 2 + n), false), rawParams.subarray(2 + n)]);
        }
      } else {
        paramsBase = r.offset;
        rawParams = r.rest();
      }
      return { handles: outHandles, params: new TpmReader(rawParams, `${commandName(req.cc)} response`, paramsBase), rawParams };
    }
  }
}
