import { describe, expect, it } from 'vitest';
import { openPlatform, resolveTcti } from './index.js';

describe('resolveTcti: flag > environment > configuration > platform default', () => {
  const dflt = async () => 'device:/dev/tpmrm0';
  it('takes each source only when the ones before it are absent', async () => {
    const env = { HYPERENCLAVE_TCTI: 'swtpm:port=1', TPM2TOOLS_TCTI: 'swtpm:port=2' };
    expect(await resolveTcti({ flag: 'swtpm:port=9', config: 'swtpm:port=3', env }, dflt)).toBe('swtpm:port=9');
    expect(await resolveTcti({ config: 'swtpm:port=3', env }, dflt)).toBe('swtpm:port=1');
    expect(await resolveTcti({ config: 'swtpm:port=3', env: { TPM2TOOLS_TCTI: 'swtpm:port=2' } }, dflt)).toBe('swtpm:port=2');
    expect(await resolveTcti({ config: 'swtpm:port=3', env: {} }, dflt)).toBe('swtpm:port=3');
    expect(await resolveTcti({ env: {} }, dflt)).toBe('device:/dev/tpmrm0');
  });
  it('is what Platform.resolveTcti does (the configuration given to openPlatform)', async () => {
    const saved = { h: process.env.HYPERENCLAVE_TCTI, t: process.env.TPM2TOOLS_TCTI };
    delete process.env.HYPERENCLAVE_TCTI;
    delete process.env.TPM2TOOLS_TCTI;
    try {
      const p = openPlatform({ platform: 'linux', stateDir: '/nonexistent-he-state', tcti: 'swtpm:port=3' });
      expect(await p.resolveTcti('swtpm:port=9')).toBe('swtpm:port=9');
      expect(await p.resolveTcti()).toBe('swtpm:port=3');
      process.env.TPM2TOOLS_TCTI = 'swtpm:port=2';
      expect(await p.resolveTcti()).toBe('swtpm:port=2');
    } finally {
      for (const [k, v] of [['HYPERENCLAVE_TCTI', saved.h], ['TPM2TOOLS_TCTI', saved.t]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
  it('gives each platform its capabilities (the code outside src/platform reads these, not kind)', () => {
    const linux = openPlatform({ platform: 'linux', stateDir: '/nonexistent-he-state' });
    const emu = openPlatform({ platform: 'emulated', stateDir: '/nonexistent-he-state' });
    expect([linux.hypervisorTransport, linux.imageMeasuredBy, linux.drtm, linux.claimedKind, linux.demotesHost, linux.emulator]).toEqual([{ via: 'device' }, 'driver', 'firmware', 'real', true, undefined]);
    expect([emu.hypervisorTransport, emu.imageMeasuredBy, emu.drtm, emu.claimedKind, emu.demotesHost, emu.emulator]).toEqual([{ via: 'service', stateDir: '/nonexistent-he-state' }, 'tool', 'emulated', 'emulated', false, { stateDir: '/nonexistent-he-state' }]);
  });
});
