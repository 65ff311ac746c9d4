import { randomBytes } from 'node:crypto';

export type NonceState = 'fresh' | 'unknown' | 'expired' | 'used';

/**
 * Single-use challenges with expiry, in memory. Used nonces are remembered until their
 * expiry so a replayed bundle is told "used", not "unknown"; the table is bounded.
 */
export class NonceStore {
  private readonly live = new Map<string, { expires: number; used: boolean }>();
  constructor(
    readonly ttlMs = 300_000,
    readonly maxOutstanding = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  issue(bytes = 32): { nonce: string; expiresAt: string } {
    this.prune();
    if (this.live.size >= this.maxOutstanding) {
      // Drop the oldest entry (Map keeps insertion order) rather than grow without bound.
      const first = this.live.keys().next().value;
      if (first !== undefined) this.live.delete(first);
    }
    const nonce = randomBytes(bytes).toString('hex');
    const expires = this.now() + this.ttlMs;
    this.live.set(nonce, { expires, used: false });
    return { nonce, expiresAt: new Date(expires).toISOString() };
  }

  /** Marks the nonce used; tells what it was before. */
  consume(nonce: string): NonceState {
    const e = this.live.get(nonce.toLowerCase());
    if (!e) return 'unknown';
    if (e.used) return 'used';
    if (this.now() > e.expires) {
      e.used = true;
      return 'expired';
    }
    e.used = true;
    return 'fresh';
  }

  private prune(): void {
    const t = this.now();
    for (const [k, v] of this.live) if (t > v.expires + this.ttlMs) this.live.delete(k);
  }

  get size(): number {
    return this.live.size;
  }
}
