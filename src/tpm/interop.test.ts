/** Interop with tpm2-tools as a peer, both against the same swtpm. */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { TPM_ALG } from './alg.js';
import { TpmClient } from './client.js';
import { TpmReader, marshal } from './marshal.js';
import { marshalPublic2B, parseSignature, readPublic2B, type PcrSelection } from './structures.js';
import { openTransport } from './tcti.js';
import { publicKeyPem, readPcrsSerialized, verifyQuote, writePcrsSerialized } from './verify.js';
import { commandMissing, skipUnless } from '../../test/helpers/require.js';

const why = skipUnless('tpm2-tools interop tests', [
  ['swtpm', swtpmAvailable()],
  ...['tpm2_pcrread', 'tpm2_checkquote', 'tpm2_createak', 'tpm2_flushcontext'].map((t) => ['tpm2-tools', commandMissing(t, 'tpm2-tools')] as const),
]);

describe.skipIf(!!why)('interop with tpm2-tools', () => {
  let tpm: SwtpmInstance;
  let dir: string;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp' });
    dir = mkdtempSync(join(tmpdir(), 'tpm-interop-'));
  });
  afterAll(async () => {
    await tpm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a tpm2-tools command against the test TPM; throws with its stderr on failure. */
  function tool(args: string[], opts: { tpm?: boolean } = {}): string {
    const env = { ...process.env, TPM2TOOLS_TCTI: tpm.tcti };
    const r = spawnSync(args[0]!, args.slice(1), { cwd: dir, env, encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status}): ${r.stderr}`);
    if (opts.tpm !== false) {
      // No resource manager: flush what the tool left behind.
      spawnSync('tpm2_flushcontext', ['-t'], { env, timeout: 10_000 });
      spawnSync('tpm2_flushcontext', ['-s'], { env, timeout: 10_000 });
    }
    return r.stdout;
  }
  /** Our client for the duration of fn; closed after, since swtpm serves one client at a time. */
  async function withClient<T>(fn: (c: TpmClient) => Promise<T>): Promise<T> {
    const c = new TpmClient(openTransport(tpm.tcti));
    try {
      return await fn(c);
    } finally {
      await c.flushAll().catch(() => undefined);
      await c.close();
    }
  }
  const f = (name: string): string => join(dir, name);

  it('our quotes (RSA and ECC AK) verify with tpm2_checkquote', async () => {
    for (const kind of ['rsa', 'ecc'] as const) {
      const nonce = randomBytes(20);
      const sel: PcrSelection[] = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 16, 17] }];
      const { q, pcrs, akPem } = await withClient(async (c) => {
        const ek = await c.createEk(kind);
        const ak = await c.createAk(ek, kind);
        const q = await c.quote(ak.object, sel, nonce);
        const pcrs = await c.pcrRead(sel);
        return { q, pcrs, akPem: publicKeyPem(ak.object.public) };
      });
      writeFileSync(f('msg'), q.attest);
      writeFileSync(f('sig'), q.signatureBytes);
      writeFileSync(f('pcrs'), writePcrsSerialized(sel, pcrs.banks));
      writeFileSync(f('ak.pem'), akPem);
      const out = tool(['tpm2_checkquote', '-u', 'ak.pem', '-m', 'msg', '-s', 'sig', '-f', 'pcrs', '-g', 'sha256', '-q', nonce.toString('hex')], { tpm: false });
      expect(out).toMatch(/pcrs:/);
      // A wrong nonce is refused by the tool: the check is real.
      expect(() => tool(['tpm2_checkquote', '-u', 'ak.pem', '-m', 'msg', '-s', 'sig', '-f', 'pcrs', '-g', 'sha256', '-q', 'abcd'], { tpm: false })).toThrow(/failed/);
    }
  });

  it('PCRs we extend read back identically with tpm2_pcrread, and the reverse', async () => {
    const d1 = createHash('sha1').update('ours').digest();
    const d256 = createHash('sha256').update('ours').digest();
    const ours = await withClient(async (c) => {
      await c.pcrExtend(16, [
        { hashAlg: TPM_ALG.SHA1, digest: d1 },
        { hashAlg: TPM_ALG.SHA256, digest: d256 },
      ]);
      await c.pcrEvent(16, Buffer.from('event'));
      return c.pcrRead([
        { hash: TPM_ALG.SHA1, pcrs: [0, 16, 17] },
        { hash: TPM_ALG.SHA256, pcrs: [0, 16, 17] },
      ]);
    });
    tool(['tpm2_pcrread', 'sha1:0,16,17+sha256:0,16,17', '-F', 'serialized', '-o', 'pcrs.bin']);
    const theirs = readPcrsSerialized(readFileSync(f('pcrs.bin')));
    for (const alg of [TPM_ALG.SHA1, TPM_ALG.SHA256]) {
      const a = ours.banks.find((b) => b.hash === alg)!;
      const b = theirs.banks.find((x) => x.hash === alg)!;
      for (const p of [0, 16, 17]) expect(b.values.get(p)!.toString('hex'), `PCR ${p}`).toBe(a.values.get(p)!.toString('hex'));
    }
    // The YAML text shows the same values.
    const yaml = tool(['tpm2_pcrread', 'sha256:16']);
    expect(yaml.toLowerCase()).toContain(ours.banks[1]!.values.get(16)!.toString('hex'));
    // Reverse: tpm2_pcrextend, read by us.
    const e = createHash('sha256').update('theirs').digest('hex');
    tool(['tpm2_pcrextend', `23:sha256=${e}`]);
    const p23 = await withClient((c) => c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [23] }]));
    expect(p23.banks[0]!.values.get(23)).toEqual(createHash('sha256').update(Buffer.alloc(32)).update(Buffer.from(e, 'hex')).digest());
  });

  it('an AK made by tpm2_createak is loaded and used by our client; its quote and the tools\' quote verify', async () => {
    for (const [alg, scheme] of [['rsa', 'rsassa'], ['ecc', 'ecdsa']] as const) {
      tool(['tpm2_createek', '-c', 'ek.ctx', '-G', alg, '-u', 'ek.pub']);
      tool(['tpm2_createak', '-C', 'ek.ctx', '-c', 'ak.ctx', '-G', alg, '-g', 'sha256', '-s', scheme, '-u', 'ak.pub', '-r', 'ak.priv', '-n', 'ak.name']);
      const akPub = readPublic2B(new TpmReader(readFileSync(f('ak.pub')), 'ak.pub'));
      const akPriv = new TpmReader(readFileSync(f('ak.priv')), 'ak.priv').tpm2b('TPM2B_PRIVATE', 4096);
      const ekPubTools = readPublic2B(new TpmReader(readFileSync(f('ek.pub')), 'ek.pub'));
      const nonce = randomBytes(16);
      const sel: PcrSelection[] = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 16] }];
      const { q, pcrs } = await withClient(async (c) => {
        const ek = await c.createEk(alg);
        // Same template, same seed: the EK tpm2_createek made is ours.
        expect(ek.public).toEqual(ekPubTools);
        const s = await c.ekPolicySession();
        const ak = await c.load(ek, akPriv, akPub, { parentAuth: { session: s } });
        await c.flushContext(s);
        expect(ak.name).toEqual(readFileSync(f('ak.name')));
        const q = await c.quote(ak, sel, nonce);
        const pcrs = await c.pcrRead(sel);
        return { q, pcrs };
      });
      verifyQuote({ ak: akPub, attest: q.attest, signature: q.signature, nonce, pcrs: pcrs.banks });
      // The tools' own quote with that AK verifies with our verifier, PCRs from the tools' file.
      tool(['tpm2_quote', '-c', 'ak.ctx', '-l', 'sha256:0,1,16+sha1:17', '-q', nonce.toString('hex'), '-m', 'tq.msg', '-s', 'tq.sig', '-o', 'tq.pcrs', '-F', 'serialized', '-g', 'sha256']);
      const tp = readPcrsSerialized(readFileSync(f('tq.pcrs')));
      const check = verifyQuote({ ak: akPub, attest: readFileSync(f('tq.msg')), signature: parseSignature(readFileSync(f('tq.sig'))), nonce, pcrs: tp.banks });
      expect(check.pcrDigest).toBeDefined();
      expect(tp.selection.map((s) => s.hash)).toEqual([TPM_ALG.SHA256, TPM_ALG.SHA1]);
    }
  });

  it('an AK made by our client is loaded by tpm2_load under the tools\' EK and quotes for tpm2_checkquote', async () => {
    const ak = await withClient(async (c) => {
      const ek = await c.createEk('rsa');
      return c.createAk(ek, 'ecc');
    });
    writeFileSync(f('our.pub'), marshal((w) => marshalPublic2B(w, ak.object.public)));
    writeFileSync(f('our.priv'), marshal((w) => w.tpm2b(ak.private)));
    writeFileSync(f('our.pem'), publicKeyPem(ak.object.public));
    tool(['tpm2_createek', '-c', 'ek.ctx', '-G', 'rsa']);
    // One shell so the policy session survives between the tools; flushed after.
    const env = { ...process.env, TPM2TOOLS_TCTI: tpm.tcti };
    const script = [
      'set -e',
      'tpm2_startauthsession --policy-session -S s.ctx',
      'tpm2_policysecret -S s.ctx -c e',
      'tpm2_load -C ek.ctx -u our.pub -r our.priv -c our.ctx -P session:s.ctx',
      'tpm2_flushcontext s.ctx',
      'tpm2_flushcontext -t',
      'tpm2_quote -c our.ctx -l sha256:0,1,2 -q 0102 -m oq.msg -s oq.sig -o oq.pcrs -F serialized -g sha256',
      'tpm2_flushcontext -t',
      'tpm2_checkquote -u our.pem -m oq.msg -s oq.sig -f oq.pcrs -g sha256 -q 0102',
    ].join('\n');
    const r = spawnSync('sh', ['-c', script], { cwd: dir, env, encoding: 'utf8', timeout: 60_000 });
    spawnSync('tpm2_flushcontext', ['-t'], { env });
    spawnSync('tpm2_flushcontext', ['-s'], { env });
    expect(r.status, r.stderr).toBe(0);
    const name = tool(['tpm2_readpublic', '-c', 'our.ctx', '-n', 'our.name']);
    expect(name).toMatch(/name:/);
    expect(readFileSync(f('our.name'))).toEqual(ak.object.name);
  });
});
