import { parentPort, workerData } from 'node:worker_threads';
import { createConnection, type Socket } from 'node:net';

/**
 * The service's OCALL worker (see ocall-bridge.ts): forwards one OCALL at a time to the client
 * socket named in the message and puts the answer in the shared buffer: ctl[0] = 1 answer /
 * 2 error, ctl[1] = length, bytes after the 8-byte header; then wakes the waiting thread.
 */
const sab = (workerData as { sab: SharedArrayBuffer }).sab;
const ctl = new Int32Array(sab, 0, 2);
const data = new Uint8Array(sab, 8);

interface Conn {
  sock: Socket;
  buf: string;
  waiting: ((line: string | Error) => void) | undefined;
}
const conns = new Map<string, Conn>();

function connect(path: string): Promise<Conn> {
  const have = conns.get(path);
  if (have && !have.sock.destroyed) return Promise.resolve(have);
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const c: Conn = { sock, buf: '', waiting: undefined };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      c.buf += chunk;
      const nl = c.buf.indexOf('\n');
      if (nl >= 0 && c.waiting) {
        const line = c.buf.slice(0, nl);
        c.buf = c.buf.slice(nl + 1);
        const w = c.waiting;
        c.waiting = undefined;
        w(line);
      }
    });
    const gone = (e: Error) => {
      conns.delete(path);
      const w = c.waiting;
      c.waiting = undefined;
      w?.(e);
    };
    sock.on('error', gone);
    sock.on('close', () => gone(new Error('the host application closed its OCALL socket')));
    sock.once('connect', () => {
      conns.set(path, c);
      resolve(c);
    });
    sock.once('error', reject);
  });
}

function answer(state: 1 | 2, bytes: Buffer): void {
  const n = Math.min(bytes.length, data.length);
  data.set(bytes.subarray(0, n));
  Atomics.store(ctl, 1, n);
  Atomics.store(ctl, 0, state);
  Atomics.notify(ctl, 0);
}

parentPort!.on('message', (m: { path: string; nr?: number; input?: Uint8Array; close?: boolean }) => {
  if (m.close) {
    conns.get(m.path)?.sock.destroy();
    conns.delete(m.path);
    return;
  }
  void (async () => {
    try {
      const c = await connect(m.path);
      const line = await new Promise<string | Error>((resolve) => {
        c.waiting = resolve;
        c.sock.write(JSON.stringify({ nr: m.nr, input: Buffer.from(m.input!).toString('hex') }) + '\n');
      });
      if (line instanceof Error) throw line;
      const r = JSON.parse(line) as { ok: boolean; output?: string; error?: string };
      if (r.ok) answer(1, Buffer.from(r.output ?? '', 'hex'));
      else answer(2, Buffer.from(r.error ?? 'failed', 'utf8'));
    } catch (e) {
      answer(2, Buffer.from((e as Error).message, 'utf8'));
    }
  })();
});
