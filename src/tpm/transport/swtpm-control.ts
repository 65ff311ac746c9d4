import { connect, type Socket } from 'node:net';
import { TpmProtocolError } from '../errors.js';
import { SerialQueue, DEFAULT_TIMEOUT_MS } from './transport.js';
import type { SocketTarget } from './target.js';

/** Control commands of swtpm's control channel (swtpm tpm_ioctl.h). */
export const SWTPM_CTRL = {
  GET_CAPABILITY: 0x01,
  INIT: 0x02,
  SHUTDOWN: 0x03,
  GET_TPMESTABLISHED: 0x04,
  SET_LOCALITY: 0x05,
  HASH_START: 0x06,
  HASH_DATA: 0x07,
  HASH_END: 0x08,
  CANCEL_TPM_CMD: 0x09,
  STORE_VOLATILE: 0x0a,
  RESET_TPMESTABLISHED: 0x0b,
  STOP: 0x0e,
} as const;

/** INIT flag: delete volatile state before starting. */
export const SWTPM_INIT_FLAG_DELETE_VOLATILE = 0x1;

const HASH_CHUNK = 1024;

/**
 * swtpm's out-of-band control channel (TCP or Unix). Each request uses its own connection,
 * since swtpm serves one control client at a time and tpm2-tools also needs it.
 */
export class SwtpmControl {
  readonly description: string;
  private readonly queue = new SerialQueue();

  constructor(
    readonly target: SocketTarget,
    private readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    this.description = `swtpm control ${'path' in target ? `unix ${target.path}` : `tcp ${target.host}:${target.port}`}`;
  }

  /** Sends one control request and returns the reply body of replyLen bytes. */
  request(code: number, payload: Buffer, replyLen: number): Promise<Buffer> {
    return this.queue.run(() => this.once([this.frame(code, payload)], replyLen));
  }

  private frame(code: number, payload: Buffer): Buffer {
    const b = Buffer.alloc(4 + payload.length);
    b.writeUInt32BE(code, 0);
    payload.copy(b, 4);
    return b;
  }

  private once(messages: Buffer[], replyLen: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s: Socket = 'path' in this.target ? connect(this.target.path) : connect(this.target.port, this.target.host);
      const chunks: Buffer[] = [];
      let got = 0;
      let done = false;
      const finish = (err?: Error, res?: Buffer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        s.destroy();
        if (err) reject(err);
        else resolve(res!);
      };
      const timer = setTimeout(() => finish(new TpmProtocolError(`${this.description}: no reply within ${this.timeoutMs} ms`)), this.timeoutMs);
      s.once('connect', () => {
        for (const m of messages) s.write(m);
      });
      s.on('data', (d) => {
        chunks.push(d);
        got += d.length;
        if (got > replyLen) finish(new TpmProtocolError(`${this.description}: reply of ${got} bytes, expected ${replyLen}`));
        else if (got === replyLen) finish(undefined, Buffer.concat(chunks));
      });
      s.once('error', (e) => finish(new TpmProtocolError(`${this.description}: ${e.message}`, { cause: e })));
      s.once('close', () => finish(new TpmProtocolError(`${this.description}: connection closed after ${got} of ${replyLen} reply byte(s)`)));
    });
  }

  private check(what: string, reply: Buffer): void {
    const res = reply.readUInt32BE(0);
    if (res !== 0) throw new TpmProtocolError(`${this.description}: ${what} failed with result 0x${res.toString(16)}`);
  }

  /** Bitmask of supported control commands (PTM_CAP_*). */
  async getCapability(): Promise<bigint> {
    const r = await this.request(SWTPM_CTRL.GET_CAPABILITY, Buffer.alloc(0), 8);
    return r.readBigUInt64BE(0);
  }

  /** Powers the TPM on again (like _TPM_Init); a TPM2_Startup must follow. */
  async init(flags = 0): Promise<void> {
    const p = Buffer.alloc(4);
    p.writeUInt32BE(flags, 0);
    this.check('INIT', await this.request(SWTPM_CTRL.INIT, p, 4));
  }

  /** Stops swtpm: the process exits. */
  async shutdown(): Promise<void> {
    this.check('SHUTDOWN', await this.request(SWTPM_CTRL.SHUTDOWN, Buffer.alloc(0), 4));
  }

  async getTpmEstablished(): Promise<boolean> {
    const r = await this.request(SWTPM_CTRL.GET_TPMESTABLISHED, Buffer.alloc(0), 8);
    this.check('GET_TPMESTABLISHED', r);
    return r[4] !== 0;
  }

  async resetTpmEstablished(locality: number): Promise<void> {
    this.check('RESET_TPMESTABLISHED', await this.request(SWTPM_CTRL.RESET_TPMESTABLISHED, Buffer.from([locality]), 4));
  }

  /** Locality of the TPM commands that follow (persists in swtpm across connections). */
  async setLocality(locality: number): Promise<void> {
    if (!Number.isInteger(locality) || locality < 0 || locality > 4) throw new TpmProtocolError(`locality ${locality} is not 0..4`);
    this.check(`SET_LOCALITY ${locality}`, await this.request(SWTPM_CTRL.SET_LOCALITY, Buffer.from([locality]), 4));
  }

  async hashStart(): Promise<void> {
    this.check('HASH_START', await this.request(SWTPM_CTRL.HASH_START, Buffer.alloc(0), 4));
  }

  /** Hashes data into the running DRTM sequence, in chunks. */
  async hashData(data: Uint8Array): Promise<void> {
    for (let off = 0; off < data.length; off += HASH_CHUNK) {
      const chunk = data.subarray(off, Math.min(off + HASH_CHUNK, data.length));
      const p = Buffer.alloc(4 + chunk.length);
      p.writeUInt32BE(chunk.length, 0);
      p.set(chunk, 4);
      this.check('HASH_DATA', await this.request(SWTPM_CTRL.HASH_DATA, p, 4));
    }
  }

  async hashEnd(): Promise<void> {
    this.check('HASH_END', await this.request(SWTPM_CTRL.HASH_END, Buffer.alloc(0), 4));
  }

  /**
   * A dynamic launch as the chipset does it: locality 4, HASH_START/DATA/END, which resets
   * PCR17 and extends H(data) into it in every bank; then back to `after` (default 0).
   */
  async drtmLaunch(data: Uint8Array, after = 0): Promise<void> {
    await this.setLocality(4);
    try {
      await this.hashStart();
      await this.hashData(data);
      await this.hashEnd();
    } finally {
      await this.setLocality(after);
    }
  }
}
