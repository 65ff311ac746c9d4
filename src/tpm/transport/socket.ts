import { connect, type Socket } from 'node:net';
import { TpmProtocolError } from '../errors.js';
import { DEFAULT_TIMEOUT_MS, SerialQueue, checkCommandFrame, responseLength, type TpmTransport } from './transport.js';
import type { SwtpmControl } from './swtpm-control.js';

import type { SocketTarget } from './target.js';

export type { SocketTarget };

export interface SocketTransportOptions {
  /** Control channel of the same swtpm, for setLocality. */
  control?: SwtpmControl;
  timeoutMs?: number;
}

function describe(t: SocketTarget): string {
  return 'path' in t ? `unix ${t.path}` : `tcp ${t.host}:${t.port}`;
}

/**
 * swtpm's command channel over TCP or a Unix socket: raw TPM command bytes, response framed
 * by the size in its header. The connection is opened on first use and kept; swtpm serves
 * one client at a time, so close() the transport before another program needs the TPM.
 */
export class SocketTransport implements TpmTransport {
  readonly description: string;
  private sock: Socket | undefined;
  private readonly queue = new SerialQueue();
  private closed = false;
  private locality = 0;

  constructor(
    readonly target: SocketTarget,
    private readonly opts: SocketTransportOptions = {},
  ) {
    this.description = `swtpm ${describe(target)}`;
  }

  private async open(timeoutMs: number): Promise<Socket> {
    if (this.sock && !this.sock.destroyed) return this.sock;
    // swtpm serves one client at a time: just after another client (or a killed process) let go,
    // or while a freshly started swtpm is still setting up its command socket, a connect can be
    // refused for a moment. Retry those briefly; anything else (no such socket) fails at once.
    const until = Date.now() + Math.min(timeoutMs, 2000);
    for (;;) {
      try {
        return await this.connectOnce(timeoutMs);
      } catch (e) {
        const code = ((e as Error).cause as NodeJS.ErrnoException | undefined)?.code;
        if ((code !== 'ECONNREFUSED' && code !== 'EAGAIN') || Date.now() >= until) throw e;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  private connectOnce(timeoutMs: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = 'path' in this.target ? connect(this.target.path) : connect(this.target.port, this.target.host);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new TpmProtocolError(`${this.description}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.setNoDelay?.(true);
        s.on('error', () => undefined);
        this.sock = s;
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new TpmProtocolError(`${this.description}: cannot connect: ${e.message}`, { cause: e }));
      });
    });
  }

  send(cmd: Buffer, opts: { timeoutMs?: number } = {}): Promise<Buffer> {
    return this.queue.run(() => this.exchange(cmd, opts.timeoutMs ?? this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS));
  }

  private async exchange(cmd: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.closed) throw new TpmProtocolError(`${this.description}: transport is closed`);
    checkCommandFrame(cmd);
    const s = await this.open(timeoutMs);
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let got = 0;
      let want: number | undefined;
      const finish = (err?: Error, res?: Buffer): void => {
        clearTimeout(timer);
        s.off('data', onData);
        s.off('close', onClose);
        if (err) {
          // The stream position is unknown after an error: drop the connection.
          s.destroy();
          this.sock = undefined;
          reject(err);
        } else resolve(res!);
      };
      const onData = (d: Buffer): void => {
        chunks.push(d);
        got += d.length;
        try {
          const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          want ??= responseLength(all, this.description);
          if (want === undefined || got < want) return;
          if (got > want) return finish(new TpmProtocolError(`${this.description}: ${got - want} byte(s) beyond the ${want}-byte response the header announced`));
          finish(undefined, all);
        } catch (e) {
          finish(e as Error);
        }
      };
      const onClose = (): void => finish(new TpmProtocolError(`${this.description}: connection closed after ${got} of ${want ?? '?'} response byte(s)`));
      const timer = setTimeout(() => finish(new TpmProtocolError(`${this.description}: no complete response within ${timeoutMs} ms (${got} byte(s) received)`)), timeoutMs);
      s.on('data', onData);
      s.once('close', onClose);
      s.write(cmd);
    });
  }

  async setLocality(locality: number): Promise<void> {
    if (!this.opts.control) throw new TpmProtocolError(`${this.description}: no swtpm control channel known, cannot set locality ${locality}`);
    if (locality === this.locality) return;
    await this.queue.run(() => this.opts.control!.setLocality(locality));
    this.locality = locality;
  }

  get control(): SwtpmControl | undefined {
    return this.opts.control;
  }

  async close(): Promise<void> {
    await this.queue.run(async () => {
      this.closed = true;
      const s = this.sock;
      this.sock = undefined;
      if (s && !s.destroyed) await new Promise<void>((resolve) => (s.once('close', () => resolve()), s.end(), setTimeout(() => s.destroy(), 200).unref()));
    });
  }
}
