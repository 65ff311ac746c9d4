import { open, type FileHandle } from 'node:fs/promises';
import { TpmProtocolError } from '../errors.js';
import { DEFAULT_TIMEOUT_MS, MAX_RESPONSE_SIZE, SerialQueue, checkCommandFrame, responseLength, type TpmTransport } from './transport.js';

/**
 * Linux TPM character device (/dev/tpmrm0 with the kernel resource manager, or /dev/tpm0):
 * one write of the command, one read returns the whole response.
 */
export class DeviceTransport implements TpmTransport {
  readonly description: string;
  private fh: FileHandle | undefined;
  private readonly queue = new SerialQueue();
  private closed = false;

  constructor(
    readonly path: string,
    private readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    this.description = `device ${path}`;
  }

  send(cmd: Buffer, opts: { timeoutMs?: number } = {}): Promise<Buffer> {
    return this.queue.run(() => this.exchange(cmd, opts.timeoutMs ?? this.timeoutMs));
  }

  private async exchange(cmd: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.closed) throw new TpmProtocolError(`${this.description}: transport is closed`);
    checkCommandFrame(cmd);
    if (!this.fh) {
      try {
        this.fh = await open(this.path, 'r+');
      } catch (e) {
        throw new TpmProtocolError(`${this.description}: cannot open: ${(e as Error).message}`, { cause: e });
      }
    }
    const fh = this.fh;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TpmProtocolError(`${this.description}: no response within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const io = (async () => {
        const w = await fh.write(cmd, 0, cmd.length);
        if (w.bytesWritten !== cmd.length) throw new TpmProtocolError(`${this.description}: wrote ${w.bytesWritten} of ${cmd.length} command bytes`);
        const buf = Buffer.alloc(MAX_RESPONSE_SIZE);
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        const resp = buf.subarray(0, bytesRead);
        const want = responseLength(resp, this.description);
        if (want === undefined) throw new TpmProtocolError(`${this.description}: response of ${bytesRead} byte(s) is shorter than a TPM header`);
        if (want !== bytesRead) throw new TpmProtocolError(`${this.description}: response header says ${want} bytes but ${bytesRead} were read`);
        return Buffer.from(resp);
      })();
      return await Promise.race([io, timeout]);
    } catch (e) {
      // A timed-out or failed exchange leaves the device state unknown: reopen next time.
      this.fh = undefined;
      await fh.close().catch(() => undefined);
      throw e instanceof TpmProtocolError ? e : new TpmProtocolError(`${this.description}: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.queue.run(async () => {
      this.closed = true;
      const fh = this.fh;
      this.fh = undefined;
      await fh?.close();
    });
  }
}
