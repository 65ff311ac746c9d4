import { describe, expect, it } from 'vitest';
import { TpmUsageError } from './errors.js';
import { openTransport, parseTcti, tctiFromEnv } from './tcti.js';

describe('TCTI strings', () => {
  it('parses the tpm2-tools spellings', () => {
    expect(parseTcti('swtpm:host=10.0.0.1,port=2400')).toEqual({ kind: 'swtpm', host: '10.0.0.1', port: 2400, ctrlPort: 2401 });
    expect(parseTcti('swtpm:port=5000')).toEqual({ kind: 'swtpm', host: '127.0.0.1', port: 5000, ctrlPort: 5001 });
    expect(parseTcti('swtpm:port=5000,ctrl=6000')).toMatchObject({ ctrlPort: 6000 });
    expect(parseTcti('swtpm')).toEqual({ kind: 'swtpm', host: '127.0.0.1', port: 2321, ctrlPort: 2322 });
    expect(parseTcti('swtpm:path=/run/x/tpm.sock')).toEqual({ kind: 'swtpm-unix', path: '/run/x/tpm.sock', ctrlPath: '/run/x/tpm.sock.ctrl' });
    expect(parseTcti('swtpm:path=/a.sock,ctrl=/b.sock')).toEqual({ kind: 'swtpm-unix', path: '/a.sock', ctrlPath: '/b.sock' });
    expect(parseTcti('swtpm:path=/a.sock')).toEqual({ kind: 'swtpm-unix', path: '/a.sock', ctrlPath: '/a.sock.ctrl' });
    expect(parseTcti('device:/dev/tpmrm0')).toEqual({ kind: 'device', path: '/dev/tpmrm0' });
    expect(parseTcti('device')).toEqual({ kind: 'device', path: '/dev/tpmrm0' });
    expect(openTransport('device:/dev/tpm0').description).toBe('device /dev/tpm0');
    expect(openTransport('swtpm:port=4000').description).toBe('swtpm tcp 127.0.0.1:4000');
  });
  it('rejects malformed strings with one clear line', () => {
    const bad: [string, RegExp][] = [
      ['swtpm:port=abc', /port=abc is not a port number/],
      ['swtpm:port=70000', /not a port number/],
      ['swtpm:hostx', /"hostx" is not key=value/],
      ['swtpm:colour=red', /unknown key "colour"/],
      ['swtpm:path=/a,port=3', /cannot be combined/],
      ['swtpm:port=1,port=2', /given twice/],
      ['device:tpm0', /must be absolute/],
      ['mssim:port=2321', /mssim protocol is not supported/],
      ['tbs', /unknown kind "tbs"/],
    ];
    for (const [s, re] of bad) {
      expect(() => parseTcti(s)).toThrow(TpmUsageError);
      expect(() => parseTcti(s)).toThrow(re);
    }
  });
  it('takes HYPERENCLAVE_TCTI before TPM2TOOLS_TCTI', () => {
    expect(tctiFromEnv({ HYPERENCLAVE_TCTI: 'device:/dev/tpm0', TPM2TOOLS_TCTI: 'swtpm:port=1' })).toBe('device:/dev/tpm0');
    expect(tctiFromEnv({ TPM2TOOLS_TCTI: 'swtpm:port=1' })).toBe('swtpm:port=1');
    expect(tctiFromEnv({})).toBeUndefined();
  });
});
