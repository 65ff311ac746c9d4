import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TpmClient, TpmObject } from '../tpm/client.js';
import { TpmReader } from '../tpm/marshal.js';
import { publicBytes, readPublic, type TpmtPublic } from '../tpm/structures.js';
import { publicKeyPem } from '../tpm/verify.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { AttestError } from './errors.js';
import { readTextFile } from '../fs/bounded-read.js';

/**
 * The attestation key between CLI invocations, the way tpm2-tools users keep one: its
 * wrapped private part and public area, loadable under the SRK (re-derived from the standard
 * template each time), so no persistent handle is consumed and nothing is left loaded.
 */
export interface StoredAk {
  schema: 'hyperenclave/ak';
  version: 1;
  kind: 'rsa' | 'ecc';
  private: string;
  public: string;
  name: string;
  pem: string;
}

type Loaded = TpmObject & { public: TpmtPublic };

export const akPath = (stateDir: string): string => join(stateDir, 'ak.json');

export async function createStoredAk(tpm: TpmClient, stateDir: string, kind: 'rsa' | 'ecc' = 'ecc'): Promise<StoredAk> {
  const srk = await tpm.createSrk(kind);
  try {
    const made = await tpm.createAk(srk, kind);
    try {
      const stored: StoredAk = {
        schema: 'hyperenclave/ak',
        version: 1,
        kind,
        private: made.private.toString('base64'),
        public: publicBytes(made.object.public).toString('base64'),
        name: made.object.name.toString('hex'),
        pem: publicKeyPem(made.object.public),
      };
      writeFileAtomic(akPath(stateDir), JSON.stringify(stored, null, 2) + '\n', 0o600);
      return stored;
    } finally {
      await tpm.flushContext(made.object);
    }
  } finally {
    await tpm.flushContext(srk);
  }
}

export function readStoredAk(stateDir: string): StoredAk | undefined {
  const p = akPath(stateDir);
  if (!existsSync(p)) return undefined;
  const doc = JSON.parse(readTextFile(p, { what: 'stored AK', kind: 'document' })) as StoredAk;
  if (doc.schema !== 'hyperenclave/ak' || doc.version !== 1) throw new AttestError(`${p}: not a hyperenclave/ak v1 document`, 6);
  return doc;
}

/** Loads the stored AK (and its SRK parent); `release` flushes both. */
export async function loadStoredAk(tpm: TpmClient, stored: StoredAk): Promise<{ ak: Loaded; release: () => Promise<void> }> {
  const srk = await tpm.createSrk(stored.kind);
  try {
    const pub = readPublic(new TpmReader(Buffer.from(stored.public, 'base64')));
    const ak = await tpm.load(srk, Buffer.from(stored.private, 'base64'), pub);
    return {
      ak,
      release: async () => {
        await tpm.flushContext(ak);
        await tpm.flushContext(srk);
      },
    };
  } catch (e) {
    await tpm.flushContext(srk);
    throw e;
  }
}
