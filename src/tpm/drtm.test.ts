import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { TPM_ALG, hashAlgById } from './alg.js';
import { TpmClient } from './client.js';
import { TpmError, TPM_RC } from './errors.js';
import { openTpm } from './index.js';
import { swtpmControlFor } from './tcti.js';
import type { SwtpmControl } from './transport/swtpm-control.js';
import { skipUnless } from '../../test/helpers/require.js';

const why = skipUnless('DRTM tests', [['swtpm', swtpmAvailable()]]);

describe.skipIf(!!why)('DRTM through the swtpm control channel', () => {
  let tpm: SwtpmInstance;
  let c: TpmClient;
  let ctrl: SwtpmControl;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'unix' });
    c = await openTpm(tpm.tcti);
    ctrl = swtpmControlFor(tpm.tcti)!;
  });
  afterAll(async () => {
    await c?.close();
    await tpm?.stop();
  });

  it('HASH_START/DATA/END at locality 4 leaves PCR17 = H(0^n || H(data)) in every active bank', async () => {
    const banks = await c.getActiveBanks();
    expect(banks.length).toBe(4);
    const before = await c.pcrReadAll();
    for (const b of before) expect(b.values.get(17)).toEqual(Buffer.alloc(hashAlgById(b.hash)!.size, 0xff));
    for (const size of [5000, 37]) {
      const data = randomBytes(size); // more than one HASH_DATA chunk for the first
      await ctrl.drtmLaunch(data);
      const after = await c.pcrReadAll();
      for (const b of after) {
        const h = hashAlgById(b.hash)!;
        const expected = createHash(h.nodeName).update(Buffer.alloc(h.size)).update(createHash(h.nodeName).update(data).digest()).digest();
        expect(b.values.get(17), `PCR17 ${h.name}`).toEqual(expected);
      }
    }
  });

  it('PCR_Extend of PCR17 at locality 0 fails with TPM_RC_LOCALITY naming PCR 17; at locality 4 it works', async () => {
    const d = { hashAlg: TPM_ALG.SHA256, digest: Buffer.alloc(32, 1) };
    const err = await c.pcrExtend(17, [d]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TpmError);
    expect((err as TpmError).base).toBe(TPM_RC.LOCALITY);
    expect((err as TpmError).message).toMatch(/^TPM_RC_LOCALITY: PCR 17 cannot be extended at locality 0 \(TPM2_PCR_Extend/);
    const v0 = (await c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [17] }])).banks[0]!.values.get(17)!;
    await c.setLocality(4);
    try {
      await c.pcrExtend(17, [d]);
    } finally {
      await c.setLocality(0);
    }
    const v1 = (await c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [17] }])).banks[0]!.values.get(17)!;
    expect(v1).toEqual(createHash('sha256').update(v0).update(d.digest).digest());
  });
});
