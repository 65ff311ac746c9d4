import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { HyperEnclaveError, EXIT } from '../../errors.js';

/**
 * Newline-delimited JSON request/response over a Unix socket: the emulated platform's stand-in
 * for ioctls on /dev/hyperenclave. Binary fields travel as hex strings. One request in flight
 * per connection; requests over MAX_REQUEST bytes are refused.
 */
export const MAX_REQUEST = 64 * 1024 * 1024;

export interface RpcRequest {
  id: number;
  op: string;
  args?: Record<string, unknown>;
}
export type RpcResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string; exitCode: number };

export type RpcHandler = (op: string, args: Record<string, unknown>) => Promise<unknown> | unknown;

export function serveRpc(path: string, handler: RpcHandler): Server {
  const server = createServer((sock) => {
    let buf = '';
    let queue = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST) {
        sock.end(JSON.stringify({ id: 0, ok: false, error: `request larger than ${MAX_REQUEST} bytes`, exitCode: EXIT.BAD_INPUT }) + '\n');
        sock.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        queue = queue.then(() => answer(sock, line, handler));
      }
    });
    sock.on('error', () => sock.destroy());
  });
  server.listen(path);
  return server;
}

async function answer(sock: Socket, line: string, handler: RpcHandler): Promise<void> {
  let req: RpcRequest;
  try {
    req = JSON.parse(line) as RpcRequest;
    if (typeof req.op !== 'string' || typeof req.id !== 'number') throw new Error('missing op or id');
  } catch (e) {
    sock.write(JSON.stringify({ id: 0, ok: false, error: `malformed request: ${(e as Error).message}`, exitCode: EXIT.BAD_INPUT }) + '\n');
    return;
  }
  let resp: RpcResponse;
  try {
    resp = { id: req.id, ok: true, result: (await handler(req.op, req.args ?? {})) ?? null };
  } catch (e) {
    const err = e as Error & { exitCode?: number };
    resp = { id: req.id, ok: false, error: err.message, exitCode: err.exitCode ?? EXIT.INTERNAL };
  }
  if (!sock.destroyed) sock.write(JSON.stringify(resp) + '\n');
}

/** A client connection; call() rejects with HyperEnclaveError carrying the server's exit code. */
export class RpcClient {
  private nextId = 1;
  private buf = '';
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const resp = JSON.parse(this.buf.slice(0, nl)) as RpcResponse;
        this.buf = this.buf.slice(nl + 1);
        const p = this.pending.get(resp.id);
        if (!p) continue;
        this.pending.delete(resp.id);
        if (resp.ok) p.resolve(resp.result);
        else p.reject(new HyperEnclaveError(resp.error, resp.exitCode));
      }
    });
    const fail = (why: string) => {
      for (const p of this.pending.values()) p.reject(new HyperEnclaveError(why, EXIT.INTERNAL));
      this.pending.clear();
    };
    sock.on('error', (e) => fail(`emulated hypervisor connection: ${e.message}`));
    sock.on('close', () => fail('emulated hypervisor closed the connection'));
  }

  static connect(path: string, timeoutMs = 2000): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path);
      const t = setTimeout(() => {
        s.destroy();
        reject(new HyperEnclaveError(`emulated hypervisor: no answer on ${path}`, EXIT.NOT_FOUND));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(new RpcClient(s));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(new HyperEnclaveError(`emulated hypervisor not running (${path}: ${e.message})`, EXIT.NOT_FOUND));
      });
    });
  }

  call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify({ id, op, args }) + '\n');
    });
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }
}
