import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Platform } from '../platform/index.js';
import { withLock } from '../platform/lock.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { EXIT } from '../errors.js';
import { withHypervisor } from '../hypervisor/service.js';
import type { HypervisorClient } from '../hypervisor/client.js';
import { enclavesOutDir } from '../hypervisor/addon.js';
import { createEnclave } from '../enclave/lifecycle.js';
import { parseManifest, type EnclaveManifest } from '../enclave/manifest.js';
import { EnclaveError } from '../enclave/errors.js';
import type { EcallTransport } from '../edl/runtime.js';
import { KvstoreEnclave } from './kvstore.gen.js';
import { BlobDir, KV_EXIT } from './blobs.js';

/**
 * The sealed key-value store (docs/kvstore.md) as the CLI uses it: one enclave per command,
 * created from the kvstore payload, reached through the generated stubs; its OCALLs are served
 * by BlobDir on the store directory. Nothing here depends on the platform kind: the
 * HypervisorClient (src/hypervisor, chosen by src/platform) carries the ECALLs and OCALLs.
 */

type Where = Pick<Platform, 'hypervisorTransport' | 'stateDir'>;

export interface KvOptions {
  /** RSA-3072 (e = 3) key that signs the enclave's SIGSTRUCT (default: <store>/signer.pem, made on first use). */
  signer?: string;
  /** Directory with kvstore.bin / kvstore.json (default: hypervisor/enclaves/out). */
  payloadDir?: string;
}

/**
 * Runaway budget of one store ECALL. Sealing is the core's constant-time software AES-GCM; on a
 * KVM that interprets guest instructions (kvm_pvm, this development machine) that is ~1.5 ms
 * per 16-byte block, so a 3 KiB put takes seconds there (docs/kvstore.md).
 */
export const KV_ECALL_BUDGET_MS = 120_000;

/** The ISVPRODID of the store enclave ("KV"). */
export const KV_ISV_PROD_ID = 0x4b56;

function storeSigner(store: string): string {
  const p = join(store, 'signer.pem');
  if (!existsSync(p)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 3072, publicExponent: 3 });
    writeFileAtomic(p, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  }
  return p;
}

export function kvManifest(store: string, opts: KvOptions = {}): EnclaveManifest {
  const dir = opts.payloadDir ?? enclavesOutDir();
  const layout = join(dir, 'kvstore.json');
  if (!existsSync(layout)) throw new EnclaveError(`kvstore enclave not built: ${layout} missing (make build)`, EXIT.NOT_FOUND);
  const size = (JSON.parse(readFileSync(layout, 'utf8')) as { size: number }).size;
  return parseManifest(
    {
      schema: 'hyperenclave/enclave-manifest',
      version: 1,
      name: 'kvstore',
      payload: { image: join(dir, 'kvstore.bin'), layout },
      size,
      threads: 1,
      // EDMM: the version table grows into the heap (rt::heap_grow); a measured attribute.
      attributes: { debug: false, edmm: true },
      backend: { kind: 'none' },
      signer: { key: resolve(opts.signer ?? storeSigner(store)) },
      isvProdId: KV_ISV_PROD_ID,
      isvSvn: 1,
    },
    join(store, 'kvstore.manifest.json'),
  );
}

/** An ECALL transport over a hypervisor client: one ECALL on the enclave's first TCS with its OCALLs served. */
export function clientTransport(c: HypervisorClient, id: number, tcs: bigint | undefined): EcallTransport {
  return async (fn, input, ocalls) => {
    const [r] = await c.enclaveRun(id, [{ fn, input, ...(tcs !== undefined ? { tcs } : {}), timeoutMs: KV_ECALL_BUDGET_MS }], { ocalls });
    if (!r || r.ret === null) throw new EnclaveError(`kvstore: ECALL ${fn}: ${r?.error ?? 'no result'}`, EXIT.INTERNAL);
    // The enclave saw a failed OCALL: the host's own message says why (a full disk, a bound).
    if (r.error?.includes('a failed OCALL')) throw new EnclaveError(`kvstore: ${r.error}`, EXIT.INTERNAL);
    return { status: Number(r.ret), output: r.output };
  };
}

/** Runs `fn` with a store enclave over `store` (created, then destroyed), under the store's lock. */
export async function withKvStore<T>(platform: Where, store: string, fn: (kv: KvstoreEnclave) => Promise<T>, opts: KvOptions = {}): Promise<T> {
  store = resolve(store);
  mkdirSync(join(store, 'blobs'), { recursive: true, mode: 0o700 });
  return withLock(join(store, 'kv.lock'), { what: `kv store ${store}` }, async () => {
    const m = kvManifest(store, opts);
    return withHypervisor(platform, async (c) => {
      const e = await createEnclave(c, m);
      try {
        const blobs = new BlobDir(store);
        blobs.sweepTemporaries();
        const kv = new KvstoreEnclave(clientTransport(c, e.id, e.plan.tcs[0]), blobs, (n) => KV_EXIT[n] ?? EXIT.INTERNAL);
        return await fn(kv);
      } finally {
        await c.enclaveDestroy(e.id).catch(() => undefined);
      }
    });
  });
}

export async function kvPut(platform: Where, store: string, key: string, value: Buffer, opts: KvOptions = {}): Promise<bigint> {
  return withKvStore(platform, store, (kv) => kv.put(key, value), opts);
}

export async function kvGet(platform: Where, store: string, key: string, opts: KvOptions = {}): Promise<Buffer> {
  return withKvStore(platform, store, (kv) => kv.get(key), opts);
}

export async function kvDelete(platform: Where, store: string, key: string, opts: KvOptions = {}): Promise<boolean> {
  return withKvStore(platform, store, (kv) => kv.remove(key), opts);
}

/** Every key, in the host's file order, 32 per ECALL. */
export async function listKeys(kv: KvstoreEnclave): Promise<string[]> {
  const keys: string[] = [];
  for (let start = 0; ; start += 32) {
    const page = await kv.list(start);
    keys.push(...page);
    if (page.length < 32) return keys;
  }
}

export async function kvList(platform: Where, store: string, opts: KvOptions = {}): Promise<string[]> {
  return withKvStore(platform, store, listKeys, opts);
}
