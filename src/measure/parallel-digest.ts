import { type Hash, createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { type HashAlgName, hashAlgByName } from '../tpm/alg.js';
import { ImageError } from './errors.js';

/**
 * Digests of the same bytes in several banks, one bank per core: the first bank is hashed on the
 * calling thread, every other bank on its own worker thread, all reading the same chunk from a
 * shared ring of slots. A slot is refilled only after every worker has hashed it.
 */

// Runs as CommonJS in the worker (eval), so it needs no compiled file next to this one.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const h = createHash(workerData.nodeName);
const ring = new Uint8Array(workerData.ring);
const pending = new Int32Array(workerData.pending);
parentPort.on('message', (m) => {
  if (m.done) {
    parentPort.postMessage(h.digest());
    return;
  }
  h.update(ring.subarray(m.slot * workerData.slotSize, m.slot * workerData.slotSize + m.len));
  Atomics.sub(pending, m.slot, 1);
  Atomics.notify(pending, m.slot);
});
`;

// Atomics.waitAsync is in Node 20 (V8) but only in TypeScript's es2024 lib.
const waitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, i: number, v: number, t: number) => { async: boolean; value: Promise<string> | string } }).waitAsync;

interface BankWorker {
  bank: HashAlgName;
  worker: Worker;
  result: Promise<Buffer>;
}

export class ParallelMultiDigest {
  private readonly ring: SharedArrayBuffer;
  private readonly pending: Int32Array;
  private readonly local: { bank: HashAlgName; hash: Hash };
  private readonly workers: BankWorker[] = [];
  private next = 0;
  private failure: Error | undefined;

  constructor(
    banks: readonly HashAlgName[],
    readonly slotSize = 4 * 1024 * 1024,
    readonly slots = 4,
  ) {
    const algs = [...new Set(banks)].map((b) => {
      const a = hashAlgByName(b);
      if (!a) throw new ImageError(`image: unknown hash bank "${b}"`);
      return a;
    });
    if (algs.length === 0) throw new ImageError('image: no bank to hash');
    this.ring = new SharedArrayBuffer(slotSize * slots);
    const pendingBuf = new SharedArrayBuffer(4 * slots);
    this.pending = new Int32Array(pendingBuf);
    this.local = { bank: algs[0]!.name, hash: createHash(algs[0]!.nodeName) };
    for (const a of algs.slice(1)) {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { nodeName: a.nodeName, ring: this.ring, pending: pendingBuf, slotSize } });
      const result = new Promise<Buffer>((resolve, reject) => {
        worker.once('message', (d: Uint8Array) => resolve(Buffer.from(d)));
        worker.once('error', (e) => {
          this.failure = e;
          reject(e);
        });
      });
      result.catch(() => undefined);
      this.workers.push({ bank: a.name, worker, result });
    }
  }

  /** Waits until the next slot is free, then returns its index and a view to fill. */
  async acquire(): Promise<{ slot: number; view: Buffer }> {
    const slot = this.next;
    this.next = (this.next + 1) % this.slots;
    for (;;) {
      if (this.failure) throw new ImageError(`image: hashing worker failed: ${this.failure.message}`);
      const v = Atomics.load(this.pending, slot);
      if (v === 0) break;
      const w = waitAsync(this.pending, slot, v, 1000);
      if (w.async) await w.value;
    }
    return { slot, view: Buffer.from(this.ring, slot * this.slotSize, this.slotSize) };
  }

  /** Hands a filled slot to every worker, then hashes it for the local bank meanwhile. */
  submit(slot: number, len: number): void {
    Atomics.store(this.pending, slot, this.workers.length);
    for (const w of this.workers) w.worker.postMessage({ slot, len });
    this.local.hash.update(Buffer.from(this.ring, slot * this.slotSize, len));
  }

  async digest(): Promise<Partial<Record<HashAlgName, Buffer>>> {
    const out: Partial<Record<HashAlgName, Buffer>> = { [this.local.bank]: this.local.hash.digest() };
    try {
      for (const w of this.workers) w.worker.postMessage({ done: true });
      for (const w of this.workers) out[w.bank] = await w.result;
    } finally {
      await this.close();
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }
}
