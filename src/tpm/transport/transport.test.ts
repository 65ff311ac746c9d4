import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, type SwtpmInstance } from '../../platform/emulated/swtpm.js';
import { TpmClient } from '../client.js';
import { TpmProtocolError } from '../errors.js';
import { openTransport, swtpmControlFor } from '../tcti.js';
import { DeviceTransport } from './device.js';
import { SocketTransport } from './socket.js';
import { skipUnless } from '../../../test/helpers/require.js';

const GET_RANDOM_8 = Buffer.from('80010000000c0000017b0008', 'hex');

/** A peer that answers each command with whatever `reply` says (to exercise framing errors). */
async function badPeer(reply: (sock: Socket) => void): Promise<{ server: Server; path: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'tpm-badpeer-'));
  const path = join(dir, 's.sock');
  const server = createServer((sock) => sock.on('data', () => reply(sock)));
  await new Promise<void>((r) => server.listen(path, r));
  return { server, path, dir };
}

describe('framing of responses from a misbehaving peer', () => {
  const cases: [string, (s: Socket) => void, RegExp][] = [
    ['size below the header', (s) => s.write(Buffer.from('80010000000400000000', 'hex')), /size field 4 at byte 2 is below the 10-byte header/],
    ['oversized', (s) => s.write(Buffer.from('800100ffffff00000000', 'hex')), /exceeds the 65536-byte limit/],
    ['truncated then closed', (s) => s.end(Buffer.from('8001000000200000', 'hex')), /connection closed after 8 of 32 response byte/],
    ['bytes beyond the announced size', (s) => s.write(Buffer.from('80010000000a00000000ffff', 'hex')), /2 byte\(s\) beyond the 10-byte response/],
    ['no answer', () => undefined, /no complete response within 300 ms/],
  ];
  for (const [name, reply, re] of cases) {
    it(name, async () => {
      const peer = await badPeer(reply);
      const t = new SocketTransport({ path: peer.path }, { timeoutMs: 300 });
      try {
        await expect(t.send(GET_RANDOM_8)).rejects.toThrow(TpmProtocolError);
        await expect(t.send(GET_RANDOM_8)).rejects.toThrow(re);
      } finally {
        await t.close();
        peer.server.close();
        rmSync(peer.dir, { recursive: true, force: true });
      }
    });
  }
  it('a response split over many writes is reassembled', async () => {
    const resp = Buffer.from('80010000001400000000000800112233445566778899aa', 'hex').subarray(0, 20);
    resp.writeUInt32BE(20, 2);
    const peer = await badPeer((s) => {
      for (const b of resp) s.write(Buffer.from([b]));
    });
    const t = new SocketTransport({ path: peer.path });
    try {
      expect(await t.send(GET_RANDOM_8)).toEqual(resp);
    } finally {
      await t.close();
      peer.server.close();
      rmSync(peer.dir, { recursive: true, force: true });
    }
  });
  it('refuses a malformed command and a closed transport', async () => {
    const t = new SocketTransport({ path: '/nonexistent/x.sock' }, { timeoutMs: 500 });
    await expect(t.send(Buffer.from('8001', 'hex'))).rejects.toThrow(/shorter than the 10-byte TPM header/);
    await expect(t.send(GET_RANDOM_8)).rejects.toThrow(/cannot connect/);
    await t.close();
    await expect(t.send(GET_RANDOM_8)).rejects.toThrow(/transport is closed/);
  });
});

describe('Linux character-device transport', () => {
  it('reports a device that answers nothing or garbage, and a missing device', async () => {
    const empty = new DeviceTransport('/dev/null');
    await expect(empty.send(GET_RANDOM_8)).rejects.toThrow(/response of 0 byte\(s\) is shorter than a TPM header/);
    await empty.close();
    const zeros = new DeviceTransport('/dev/zero');
    await expect(zeros.send(GET_RANDOM_8)).rejects.toThrow(/size field 0 at byte 2 is below the 10-byte header/);
    await zeros.close();
    const missing = new DeviceTransport('/dev/tpm-does-not-exist');
    await expect(missing.send(GET_RANDOM_8)).rejects.toThrow(/cannot open/);
  });
});

const why = skipUnless('swtpm transport tests', [['swtpm', swtpmAvailable()]]);
describe.skipIf(!!why)('swtpm transports', () => {
  let tcp: SwtpmInstance;
  let unix: SwtpmInstance;
  beforeAll(async () => {
    [tcp, unix] = await Promise.all([startSwtpm({ transport: 'tcp' }), startSwtpm({ transport: 'unix' })]);
  });
  afterAll(async () => {
    await Promise.all([tcp?.stop(), unix?.stop()]);
  });

  it('serializes concurrent commands (one in flight) over TCP and Unix sockets', async () => {
    for (const inst of [tcp, unix]) {
      const c = new TpmClient(openTransport(inst.tcti));
      const all = await Promise.all(Array.from({ length: 40 }, () => c.getRandom(16)));
      expect(new Set(all.map((b) => b.toString('hex'))).size).toBe(40);
      await c.close();
      // swtpm serves one client at a time: a clean close lets the next one in.
      const c2 = new TpmClient(openTransport(inst.tcti));
      expect((await c2.getRandom(8)).length).toBe(8);
      await c2.close();
    }
  });

  it('control channel: capabilities, TPM established flag, locality range', async () => {
    for (const inst of [tcp, unix]) {
      const ctrl = swtpmControlFor(inst.tcti)!;
      const caps = await ctrl.getCapability();
      expect(caps & 0x10n).toBe(0x10n); // PTM_CAP_SET_LOCALITY
      expect(typeof (await ctrl.getTpmEstablished())).toBe('boolean');
      await expect(ctrl.setLocality(5)).rejects.toThrow(/locality 5 is not 0..4/);
      await ctrl.setLocality(0);
    }
  });
});
