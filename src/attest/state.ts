import { mkdirSync, readdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../fs/atomic.js';
import { AttestError } from './errors.js';
import { loadOrCreateVerifierKey, type VerifierKey } from './result.js';
import type { ClockRecord, EnrollmentRecord, PendingEnrollment } from './types.js';

const HEXNAME = /^[0-9a-f]{16,140}$/;

/**
 * The verifier's state directory:
 *   verifier-key.pem / .pub.pem   ES256 key that signs results and enrollment records
 *   enrollments/<akSpkiSha256>.json   AKs enrolled by credential activation
 *   pending/<id>.json              enrollment challenges waiting for the attester's answer
 *   clock/<akSpkiSha256>.json      clock/reset/restart counters of the last accepted quote
 */
export class VerifierState {
  private enrollments: Map<string, EnrollmentRecord> | undefined;
  private keyCache: VerifierKey | undefined;
  private readonly clocks = new Map<string, string>();
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  key(): VerifierKey {
    this.keyCache ??= loadOrCreateVerifierKey(this.dir);
    return this.keyCache;
  }

  private loadEnrollments(): Map<string, EnrollmentRecord> {
    if (this.enrollments) return this.enrollments;
    const m = new Map<string, EnrollmentRecord>();
    const d = join(this.dir, 'enrollments');
    if (existsSync(d)) {
      for (const f of readdirSync(d)) {
        if (!f.endsWith('.json')) continue;
        try {
          const r = JSON.parse(readFileSync(join(d, f), 'utf8')) as EnrollmentRecord;
          if (r.akSpkiSha256) m.set(r.akSpkiSha256, r);
        } catch {
          throw new AttestError(`${join(d, f)}: enrollment record is not JSON`);
        }
      }
    }
    this.enrollments = m;
    return m;
  }

  /** Every enrollment record in the directory (the service imports them into its database). */
  listEnrollments(): EnrollmentRecord[] {
    return [...this.loadEnrollments().values()];
  }

  findEnrollment(akNameHex: string | undefined, akSpkiHash: string): EnrollmentRecord | undefined {
    const r = this.loadEnrollments().get(akSpkiHash);
    if (!r) return undefined;
    if (akNameHex && r.akName !== akNameHex) return undefined;
    return r;
  }

  saveEnrollment(r: EnrollmentRecord): string {
    if (!HEXNAME.test(r.akSpkiSha256)) throw new AttestError('enrollment record: bad akSpkiSha256');
    const path = join(this.dir, 'enrollments', `${r.akSpkiSha256}.json`);
    writeFileAtomic(path, JSON.stringify(r, null, 2) + '\n');
    this.loadEnrollments().set(r.akSpkiSha256, r);
    return path;
  }

  savePending(p: PendingEnrollment): void {
    writeFileAtomic(join(this.dir, 'pending', `${p.id}.json`), JSON.stringify(p) + '\n', 0o600);
  }

  /** Reads and removes a pending enrollment (single use). */
  takePending(id: string): PendingEnrollment | undefined {
    checkEnrollmentId(id);
    const path = join(this.dir, 'pending', `${id}.json`);
    if (!existsSync(path)) return undefined;
    const p = JSON.parse(readFileSync(path, 'utf8')) as PendingEnrollment;
    rmSync(path, { force: true });
    return p;
  }

  previousClock(akSpkiHash: string): ClockRecord | undefined {
    const path = join(this.dir, 'clock', `${akSpkiHash}.json`);
    if (!existsSync(path)) return undefined;
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as ClockRecord;
    } catch {
      return undefined;
    }
  }

  recordClock(akSpkiHash: string, rec: ClockRecord): void {
    if (!HEXNAME.test(akSpkiHash)) return;
    const key = `${rec.resetCount}/${rec.restartCount}/${rec.clock}`;
    if (this.clocks.get(akSpkiHash) === key) return; // same quote seen again: nothing new to persist
    this.clocks.set(akSpkiHash, key);
    writeFileAtomic(join(this.dir, 'clock', `${akSpkiHash}.json`), JSON.stringify(rec) + '\n');
  }
}

/** Checks an enrollment id's form before any lookup. */
export function checkEnrollmentId(id: string): void {
  if (!/^[0-9a-f]{32}$/.test(id)) throw new AttestError(`enrollment id "${id.slice(0, 40)}" is not 32 hex digits`);
}
