import { describe, expect, it } from 'vitest';
import { EXIT, HyperEnclaveError } from '../errors.js';
import { TPM_CC } from './constants.js';
import { TpmError, TpmProtocolError, decodeRc } from './errors.js';

describe('response code decoding', () => {
  it('format 0 errors and warnings', () => {
    expect(decodeRc(0x100)).toMatchObject({ name: 'TPM_RC_INITIALIZE', format: 0, warning: false });
    expect(decodeRc(0x907)).toMatchObject({ name: 'TPM_RC_LOCALITY', warning: true, base: 0x907 });
    expect(decodeRc(0x922).name).toBe('TPM_RC_RETRY');
    expect(decodeRc(0x902).meaning).toMatch(/object contexts/);
    expect(decodeRc(0x911).name).toBe('TPM_RC_REFERENCE_H1');
  });
  it('format 1 with parameter, handle and session numbers', () => {
    // TPM_RC_VALUE on parameter 1: 0x1c4
    expect(decodeRc(0x1c4)).toMatchObject({ name: 'TPM_RC_VALUE', format: 1, parameter: 1, base: 0x084 });
    // TPM_RC_HANDLE on handle 1: 0x18b
    expect(decodeRc(0x18b)).toMatchObject({ name: 'TPM_RC_HANDLE', handle: 1, base: 0x08b });
    // TPM_RC_AUTH_FAIL in session 1: 0x98e
    expect(decodeRc(0x98e)).toMatchObject({ name: 'TPM_RC_AUTH_FAIL', session: 1 });
    // parameter 15
    expect(decodeRc(0xfd5)).toMatchObject({ name: 'TPM_RC_SIZE', parameter: 15 });
  });
  it('vendor, TPM 1.2 and TSS layer codes', () => {
    expect(decodeRc(0x500).name).toMatch(/VENDOR/);
    expect(decodeRc(0x0026).name).toMatch(/1\.2/);
    expect(decodeRc(0x000a0008).name).toMatch(/TSS layer 10/);
  });
  it('TpmError: one line, caller context, exit code', () => {
    const e = new TpmError(0x907, TPM_CC.PCR_Extend, 'PCR 17 cannot be extended at locality 0');
    expect(e.message).toBe('TPM_RC_LOCALITY: PCR 17 cannot be extended at locality 0 (TPM2_PCR_Extend, rc 0x907)');
    expect(e).toBeInstanceOf(HyperEnclaveError);
    expect(e.exitCode).toBe(EXIT.TPM);
    expect(new TpmError(0x1c4, TPM_CC.Quote).message).toBe('TPM_RC_VALUE: value is out of range or is not correct for the context (TPM2_Quote, parameter 1, rc 0x1c4)');
    expect(new TpmProtocolError('x')).toBeInstanceOf(HyperEnclaveError);
  });
});
