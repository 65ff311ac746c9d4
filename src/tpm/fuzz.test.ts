/**
 * Random bytes, truncations, bit flips and size-field edits fed to every unmarshaler and to
 * the client's response parsing (real swtpm responses as seeds). Only TpmProtocolError (or a
 * decoded TpmError when the response code itself was hit) may come out; never a crash or a hang.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../platform/emulated/swtpm.js';
import { TPM_ALG } from './alg.js';
import { TpmClient } from './client.js';
import { TPM_CAP, TPM_RH } from './constants.js';
import { TpmError, TpmProtocolError } from './errors.js';
import { TpmReader, marshal } from './marshal.js';
import { UNMARSHALERS, marshalCapabilityData, marshalPcrSelectionList, marshalPublic, marshalPublic2B } from './structures.js';
import { akTemplate, ekTemplateEcc, ekTemplateRsa } from './templates.js';
import { openTransport } from './tcti.js';
import type { TpmTransport } from './transport/transport.js';
import { readPcrsSerialized, writePcrsSerialized } from './verify.js';
import { skipUnless } from '../../test/helpers/require.js';

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mutate(seed: Buffer, rnd: () => number): Buffer {
  const int = (n: number): number => Math.floor(rnd() * n);
  const b = Buffer.from(seed);
  switch (int(6)) {
    case 0: // truncation
      return b.subarray(0, int(b.length + 1));
    case 1: // bit flips
      for (let i = 0, n = 1 + int(4); i < n && b.length; i++) b[int(b.length)]! ^= 1 << int(8);
      return b;
    case 2: // a 16/32-bit field set to an extreme
      if (b.length >= 4) {
        const at = int(b.length - 3);
        const v = [0, 0xff, 0x7f, 0x80][int(4)]!;
        b.fill(v, at, at + 1 + int(4));
      }
      return b;
    case 3: // random bytes of random length
      return Buffer.from(Array.from({ length: int(300) }, () => int(256)));
    case 4: // appended garbage
      return Buffer.concat([b, Buffer.from(Array.from({ length: 1 + int(16) }, () => int(256)))]);
    default: // random splice
      if (b.length > 2) {
        const at = int(b.length);
        b.set(Buffer.from(Array.from({ length: Math.min(8, b.length - at) }, () => int(256))), at);
      }
      return b;
  }
}

function allowed(e: unknown): boolean {
  return e instanceof TpmProtocolError || e instanceof TpmError;
}

describe('fuzzing unmarshalers', () => {
  const seeds: Record<string, Buffer[]> = {
    TPMT_PUBLIC: [ekTemplateRsa(), ekTemplateEcc(), akTemplate('rsa'), akTemplate('ecc')].map((t) => marshal((w) => marshalPublic(w, t))),
    TPM2B_PUBLIC: [ekTemplateRsa(), akTemplate('ecc')].map((t) => marshal((w) => marshalPublic2B(w, t))),
    TPML_PCR_SELECTION: [marshal((w) => marshalPcrSelectionList(w, [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2] }, { hash: TPM_ALG.SHA1, pcrs: [17] }]))],
    TPMS_CAPABILITY_DATA: [marshal((w) => marshalCapabilityData(w, { capability: TPM_CAP.TPM_PROPERTIES, properties: [{ property: 0x100, value: 1 }, { property: 0x101, value: 2 }] }))],
  };
  it('every unmarshaler throws only TpmProtocolError', () => {
    const rnd = prng(Number(process.env.TPM_FUZZ_SEED ?? 0x7e57));
    let ok = 0;
    let rejected = 0;
    for (const [name, read] of Object.entries(UNMARSHALERS)) {
      const base = seeds[name] ?? [Buffer.alloc(64)];
      for (let i = 0; i < 3000; i++) {
        const input = mutate(base[i % base.length]!, rnd);
        try {
          read(new TpmReader(input, name));
          ok++;
        } catch (e) {
          if (!(e instanceof TpmProtocolError)) throw new Error(`${name} threw ${(e as Error).name}: ${(e as Error).message} on ${input.toString('hex')}`);
          rejected++;
        }
      }
    }
    expect(rejected).toBeGreaterThan(1000);
    expect(ok).toBeGreaterThan(100);
  });
  it('serialized PCR file reader throws only TpmProtocolError', () => {
    const rnd = prng(42);
    const seed = writePcrsSerialized([{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }], [{ hash: TPM_ALG.SHA256, values: new Map(Array.from({ length: 10 }, (_, i) => [i, Buffer.alloc(32, i)])) }]);
    for (let i = 0; i < 3000; i++) {
      const input = mutate(seed, rnd);
      try {
        readPcrsSerialized(input);
      } catch (e) {
        if (!(e instanceof TpmProtocolError)) throw new Error(`threw ${(e as Error).name}: ${(e as Error).message}`);
      }
    }
  });
});

/** Records real exchanges, then serves mutated copies of the recorded responses. */
class ReplayTransport implements TpmTransport {
  readonly description = 'replay';
  next: Buffer | undefined;
  async send(): Promise<Buffer> {
    const r = this.next;
    if (!r) throw new TpmProtocolError('replay: nothing to answer');
    return r;
  }
  async close(): Promise<void> {}
}

const why = skipUnless('fuzzing with mutated swtpm responses', [['swtpm', swtpmAvailable()]]);
describe.skipIf(!!why)('fuzzing response parsing with mutated real swtpm responses', () => {
  let tpm: SwtpmInstance;
  beforeAll(async () => {
    tpm = await startSwtpm({ transport: 'tcp', banks: ['sha1', 'sha256'] });
  });
  afterAll(() => tpm?.stop());

  it('client commands fail only with TpmProtocolError / TpmError', async () => {
    // Record one real response per command.
    const real = openTransport(tpm.tcti);
    const recorded: Buffer[] = [];
    const recorder: TpmTransport = {
      description: 'recorder',
      send: async (cmd) => {
        const r = await real.send(cmd);
        recorded.push(r);
        return r;
      },
      close: () => real.close(),
    };
    const live = new TpmClient(recorder);
    const calls: ((c: TpmClient) => Promise<unknown>)[] = [];
    const seeds: Buffer[] = [];
    // The last response of each call is its successful one (swtpm may first answer TPM_RC_RETRY).
    const record = async (fn: (c: TpmClient) => Promise<unknown>): Promise<void> => {
      await fn(live);
      calls.push(fn);
      seeds.push(recorded[recorded.length - 1]!);
    };
    const ek = await live.createEk('ecc');
    const srk = await live.createSrk('rsa');
    const created = await live.create(srk, akTemplate('rsa'));
    const ak = await live.load(srk, created.private, created.public);
    await live.flushContext(srk);
    const sel = [{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3] }];
    await record((c) => c.getCapability(TPM_CAP.TPM_PROPERTIES, 0x100, 64));
    await record((c) => c.getCapability(TPM_CAP.PCRS, 0, 1));
    await record((c) => c.pcrReadRaw(sel));
    await record((c) => c.quote(ak, sel, Buffer.from('n')));
    await record((c) => c.readPublic(ek.handle));
    await record((c) => c.createPrimary(TPM_RH.ENDORSEMENT, ekTemplateEcc()));
    await record((c) => c.getRandom(16));
    await record((c) => c.pcrEvent(16, Buffer.from('x')));
    await record((c) => c.contextSave(ak.handle));
    await live.flushAll();
    await live.close();

    const replay = new ReplayTransport();
    const client = new TpmClient(replay, { retries: 0 });
    const rnd = prng(Number(process.env.TPM_FUZZ_SEED ?? 0xf00d));
    let failures = 0;
    const t0 = Date.now();
    for (let i = 0; i < 6000 && Date.now() - t0 < 4000; i++) {
      const k = i % seeds.length;
      replay.next = mutate(seeds[k]!, rnd);
      try {
        await calls[k]!(client);
      } catch (e) {
        if (!allowed(e)) throw new Error(`call ${k} threw ${(e as Error).name}: ${(e as Error).message}\n${replay.next.toString('hex')}`);
        failures++;
      }
    }
    expect(failures).toBeGreaterThan(500);
    // Unmutated seeds still parse.
    for (let k = 0; k < seeds.length; k++) {
      replay.next = seeds[k];
      await calls[k]!(client);
    }
  });
});
