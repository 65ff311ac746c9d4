import { Worker } from 'node:worker_threads';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT, HyperEnclaveError } from '../../errors.js';

/**
 * OCALLs on the emulated platform. The enclave VM runs in the service process, synchronously
 * inside an N-API call, while the OCALL table belongs to the client process (the host
 * application). The client listens on a private Unix socket for the length of its ECALL and
 * names it in the request; when the enclave makes an OCALL the service's synchronous handler
 * hands it to a worker thread and blocks on a SharedArrayBuffer (Atomics.wait) until the worker
 * has the client's answer. Messages are newline-delimited JSON, binary as hex.
 */

/** Largest OCALL input/answer carried (the runner bounds both by the shared region anyway). */
export const OCALL_BRIDGE_MAX = 1 << 20;
/** How long the service waits for the client's answer to one OCALL. */
export const OCALL_ANSWER_TIMEOUT_MS = 30_000;

export type OcallHandler = (nr: number, input: Buffer) => Uint8Array;

/** Client side: serves `handler` on a fresh socket until `close`. */
export async function serveOcalls(handler: OcallHandler): Promise<{ path: string; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'he-ocall-'));
  const path = join(dir, 's');
  const server: Server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 4 * OCALL_BRIDGE_MAX) return sock.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let reply: string;
        try {
          const req = JSON.parse(line) as { nr: number; input: string };
          const out = handler(req.nr, Buffer.from(req.input, 'hex'));
          reply = JSON.stringify({ ok: true, output: Buffer.from(out).toString('hex') });
        } catch (e) {
          reply = JSON.stringify({ ok: false, error: (e as Error).message });
        }
        sock.write(reply + '\n');
      }
    });
    sock.on('error', () => sock.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    path,
    close() {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Service side: a synchronous OCALL call into a client's socket. */
export class OcallBridge {
  private worker: Worker | undefined;
  private readonly sab = new SharedArrayBuffer(8 + 2 * OCALL_BRIDGE_MAX);
  private readonly ctl = new Int32Array(this.sab, 0, 2);
  private readonly data = new Uint8Array(this.sab, 8);

  private w(): Worker {
    if (!this.worker) {
      this.worker = new Worker(new URL('./ocall-worker.js', import.meta.url), { workerData: { sab: this.sab } });
      this.worker.unref();
    }
    return this.worker;
  }

  /** Sends OCALL `nr` to the client at `path`; returns its answer or throws its one-line error. */
  call(path: string, nr: number, input: Buffer): Buffer {
    if (input.length > OCALL_BRIDGE_MAX) throw new HyperEnclaveError(`OCALL ${nr}: input of ${input.length} bytes over ${OCALL_BRIDGE_MAX}`, EXIT.BAD_INPUT);
    Atomics.store(this.ctl, 0, 0);
    this.w().postMessage({ path, nr, input });
    const r = Atomics.wait(this.ctl, 0, 0, OCALL_ANSWER_TIMEOUT_MS);
    if (r === 'timed-out') throw new HyperEnclaveError(`OCALL ${nr}: no answer from the host application in ${OCALL_ANSWER_TIMEOUT_MS} ms`, EXIT.INTERNAL);
    const len = Atomics.load(this.ctl, 1);
    const text = (n: number) => Buffer.from(this.data.subarray(0, n)).toString('utf8');
    if (Atomics.load(this.ctl, 0) === 2) throw new HyperEnclaveError(`OCALL ${nr}: ${text(len)}`, EXIT.INTERNAL);
    return Buffer.from(this.data.subarray(0, len));
  }

  /** Forgets the client's connection (its ECALL is over). */
  release(path: string): void {
    this.worker?.postMessage({ path, close: true });
  }

  close(): void {
    void this.worker?.terminate();
    this.worker = undefined;
  }
}
