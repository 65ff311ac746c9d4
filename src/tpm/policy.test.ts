import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { TPM_ALG, hashAlgById } from './alg.js';
import { TpmClient } from './client.js';
import { TPM_CC, TPM_RH } from './constants.js';
import { handleName } from './crypto.js';
import { TpmError } from './errors.js';
import { openTpm } from './index.js';
import { emptyPolicy, policyAuthValueDigest, policyCommandCodeDigest, policyPcrDigest, policySecretDigest } from './policy.js';
import { EK_AUTH_POLICY_SHA256, sealedDataTemplate } from './templates.js';
import { skipUnless } from '../../test/helpers/require.js';

const sha256 = hashAlgById(TPM_ALG.SHA256)!;

describe('policy digests in software', () => {
  it('PolicySecret(TPM_RH_ENDORSEMENT) is the EK Credential Profile authPolicy', () => {
    expect(policySecretDigest(sha256, emptyPolicy(sha256), handleName(TPM_RH.ENDORSEMENT))).toEqual(EK_AUTH_POLICY_SHA256);
  });
});

const why = skipUnless('policy tests against swtpm', [['swtpm', swtpmAvailable()]]);
describe.skipIf(!!why)('policies on swtpm', () => {
  let tpm: SwtpmInstance;
  let c: TpmClient;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp' });
    c = await openTpm(tpm.tcti);
  });
  afterAll(async () => {
    await c?.close();
    await tpm?.stop();
  });

  it('trial sessions agree with the software digests', async () => {
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [0, 16] }];
    const values = (await c.pcrRead(sel)).banks[0]!;
    const pcrDigest = createHash('sha256').update(values.values.get(0)!).update(values.values.get(16)!).digest();
    const t = await c.startAuthSession({ type: 'trial' });
    await c.policyPcr(t, sel);
    await c.policyAuthValue(t);
    const got = await c.policyGetDigest(t);
    await c.flushContext(t);
    let want = policyPcrDigest(sha256, emptyPolicy(sha256), sel, pcrDigest);
    want = policyAuthValueDigest(sha256, want);
    expect(got).toEqual(want);
    expect(policyCommandCodeDigest(sha256, emptyPolicy(sha256), TPM_CC.Unseal).length).toBe(32);
  });

  it('data sealed to PCR 16 unseals until PCR 16 changes', async () => {
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [16] }];
    await c.pcrReset(16);
    await c.pcrExtend(16, [{ hashAlg: TPM_ALG.SHA256, digest: createHash('sha256').update('boot').digest() }]);
    const v16 = (await c.pcrRead(sel)).banks[0]!.values.get(16)!;
    const policy = policyPcrDigest(sha256, emptyPolicy(sha256), sel, createHash('sha256').update(v16).digest());
    const srk = await c.createSrk('rsa');
    const secret = randomBytes(48);
    const made = await c.create(srk, sealedDataTemplate(policy), { data: secret });
    const item = await c.load(srk, made.private, made.public);
    const unsealWithPolicy = async (): Promise<Buffer> => {
      const s = await c.startAuthSession({ type: 'policy' });
      try {
        await c.policyPcr(s, sel);
        return await c.unseal(item, { session: s });
      } finally {
        if (s.active) await c.flushContext(s);
      }
    };
    expect(await unsealWithPolicy()).toEqual(secret);
    // Without a policy session (password) the object refuses: userWithAuth is clear.
    await expect(c.unseal(item)).rejects.toThrow(TpmError);
    await c.pcrExtend(16, [{ hashAlg: TPM_ALG.SHA256, digest: Buffer.alloc(32, 1) }]);
    await expect(unsealWithPolicy()).rejects.toThrow(/TPM_RC_POLICY_FAIL: the sealing policy is not satisfied/);
    await c.flushContext(item);
    await c.flushContext(srk);
    await c.pcrReset(16);
  });
});
