/**
 * EK certificate chains: certificates and CRLs made by the openssl CLI (an independent issuer),
 * and swtpm_setup's own EK certificate as the honest real-world case. The validator must accept
 * a TCG-profile EK certificate, name the anchor that validated it and the TPM it names, and
 * refuse, each with its own reason: no EK EKU, a non-CA issuer, a pathLen violation, an unknown
 * critical extension, an expired certificate, a revoked one, a stale or forged CRL.
 */
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, swtpmAvailable, swtpmCaCertificates } from '../platform/emulated/swtpm.js';
import { openTpm } from '../tpm/index.js';
import { clientEnrollingTpm } from '../attest/index.js';
import { validateEkChain } from './ek-cert.js';
import { Verifier } from '../attest/verifier.js';
import { startEnrollment } from '../attest/enroll.js';

const dir = mkdtempSync(join(tmpdir(), 'he-ekcert-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const f = (n: string): string => join(dir, n);
const ossl = (...args: string[]): string => execFileSync('openssl', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const pem = (n: string): string => readFileSync(f(n), 'utf8');

const CONF = `
[ req ]
distinguished_name = dn
[ dn ]
[ root_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ int_pathlen0 ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
[ int_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
authorityKeyIdentifier = keyid
[ notca_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
[ ek_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = 2.23.133.8.1
subjectAltName = critical, dirName:tpm_dn
[ ek_ecc_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyAgreement
extendedKeyUsage = 2.23.133.8.1
subjectAltName = critical, dirName:tpm_dn
[ ek_tls_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = critical, dirName:tpm_dn
[ ek_noeku_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
subjectAltName = critical, dirName:tpm_dn
[ ek_nosan_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = 2.23.133.8.1
[ ek_critical_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = 2.23.133.8.1
subjectAltName = critical, dirName:tpm_dn
1.2.3.4.5.6.7 = critical, ASN1:NULL
[ tpm_dn ]
x.2.23.133.2.1 = id:414D4400
x.2.23.133.2.2 = HE-TEST
x.2.23.133.2.3 = id:00010002
[ ca ]
default_ca = int_ca
[ int_ca ]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 1
`;

function ca(name: string, ext: string, issuer?: string, cn = name): void {
  ossl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
  if (!issuer) ossl('req', '-new', '-x509', '-config', 'openssl.cnf', '-extensions', ext, '-key', `${name}.key`, '-subj', `/O=HE Test/CN=${cn}`, '-days', '3650', '-out', `${name}.pem`);
  else {
    ossl('req', '-new', '-config', 'openssl.cnf', '-key', `${name}.key`, '-subj', `/O=HE Test/CN=${name}`, '-out', `${name}.csr`);
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', `${issuer}.pem`, '-CAkey', `${issuer}.key`, '-extfile', 'openssl.cnf', '-extensions', ext, '-days', '3650', '-set_serial', String(100 + name.length), '-out', `${name}.pem`);
  }
}
function ek(name: string, ext: string, issuer: string, serial: number, opts: { ecc?: boolean } = {}): void {
  if (opts.ecc) ossl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
  else ossl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', `${name}.key`);
  ossl('req', '-new', '-config', 'openssl.cnf', '-key', `${name}.key`, '-subj', '/CN=unknown', '-out', `${name}.csr`);
  ossl('x509', '-req', '-in', `${name}.csr`, '-CA', `${issuer}.pem`, '-CAkey', `${issuer}.key`, '-extfile', 'openssl.cnf', '-extensions', ext, '-days', '365', '-set_serial', String(serial), '-out', `${name}.pem`);
}
/** A CRL of `issuer` revoking `serials` (openssl ca's index format). */
function crl(out: string, issuer: string, serials: number[], extra: string[] = []): void {
  const lines = serials.map((s) => `R\t301231235959Z\t240101000000Z\t${s.toString(16).toUpperCase().padStart(2, '0')}\tunknown\t/CN=unknown`);
  writeFileSync(f('index.txt'), lines.join('\n') + (lines.length ? '\n' : ''));
  writeFileSync(f('crlnumber'), '01\n');
  ossl('ca', '-config', 'openssl.cnf', '-gencrl', '-keyfile', `${issuer}.key`, '-cert', `${issuer}.pem`, '-out', out, ...extra);
}

beforeAll(() => {
  writeFileSync(f('openssl.cnf'), CONF);
  ca('root', 'root_ext');
  ca('int', 'int_ext', 'root');
  ek('ek', 'ek_ext', 'int', 0x11);
  ek('ekecc', 'ek_ecc_ext', 'int', 0x12, { ecc: true });
  ek('ektls', 'ek_tls_ext', 'int', 0x13);
  ek('eknoeku', 'ek_noeku_ext', 'int', 0x14);
  ek('eknosan', 'ek_nosan_ext', 'int', 0x15);
  ek('ekcrit', 'ek_critical_ext', 'int', 0x16);
  ca('notca', 'notca_ext', 'root');
  ek('eknotca', 'ek_ext', 'notca', 0x18);
  ca('int0', 'int_pathlen0', 'root');
  ca('int1', 'int_ext', 'int0');
  ek('ekdeep', 'ek_ext', 'int1', 0x19);
  ek('ekshallow', 'ek_ext', 'int0', 0x1a);
  crl('revoked.crl', 'int', [0x11]);
  crl('clean.crl', 'int', [0x99]);
  ca('other', 'root_ext');
  // a CA with the intermediate's name but another key: its CRL names the intermediate as issuer
  ca('impostor', 'root_ext', undefined, 'int');
  crl('forged.crl', 'impostor', []);
  expect(ossl('crl', '-in', 'forged.crl', '-noout', '-issuer')).toMatch(/CN ?= ?int/);
}, 120_000);

describe('EK certificate chains (openssl-made certificates)', () => {
  it('accepts a TCG-profile RSA and ECC EK certificate, names the anchor and the TPM', () => {
    for (const leaf of ['ek', 'ekecc']) {
      const r = validateEkChain([pem(`${leaf}.pem`), pem('int.pem')], [pem('root.pem')]);
      expect(r.ok, r.reason).toBe(true);
      expect(r.tpm).toEqual({ manufacturer: 'id:414D4400', model: 'HE-TEST', version: 'id:00010002' });
      const der = new X509Certificate(pem('root.pem')).raw;
      expect(r.anchor).toEqual({ subject: 'O=HE Test, CN=root', sha256: createHash('sha256').update(der).digest('hex') });
      expect(r.root).toMatch(/CN=root/);
    }
    // trusting the intermediate directly is a shorter valid path
    expect(validateEkChain([pem('ek.pem')], [pem('int.pem')]).anchor?.subject).toBe('O=HE Test, CN=int');
  });

  it('refuses an EK certificate without the EK EKU 2.23.133.8.1, or without EKU, or without the TPM SAN', () => {
    expect(validateEkChain([pem('ektls.pem'), pem('int.pem')], [pem('root.pem')])).toMatchObject({ ok: false, reason: expect.stringMatching(/extendedKeyUsage 1\.3\.6\.1\.5\.5\.7\.3\.1 lacks tcg-kp-EKCertificate \(2\.23\.133\.8\.1\): not an EK certificate$/) });
    expect(validateEkChain([pem('eknoeku.pem'), pem('int.pem')], [pem('root.pem')]).reason).toMatch(/no extendedKeyUsage; the TCG EK profile requires tcg-kp-EKCertificate/);
    expect(validateEkChain([pem('eknosan.pem'), pem('int.pem')], [pem('root.pem')]).reason).toMatch(/subjectAltName lacks the TPM manufacturer, model and version/);
  });

  it('RFC 5280: non-CA issuer, pathLenConstraint, unknown critical extension, expiry, untrusted root', () => {
    expect(validateEkChain([pem('eknotca.pem'), pem('notca.pem')], [pem('root.pem')]).reason).toBe('O=HE Test, CN=notca: issuer is not a CA (basicConstraints cA absent or false)');
    expect(validateEkChain([pem('ekdeep.pem'), pem('int1.pem'), pem('int0.pem')], [pem('root.pem')]).reason).toBe('O=HE Test, CN=int1: exceeds the pathLenConstraint of a CA above it');
    expect(validateEkChain([pem('ekshallow.pem'), pem('int0.pem')], [pem('root.pem')]).ok).toBe(true);
    // OpenSSL's own path validation agrees on both
    writeFileSync(f('deep-untrusted.pem'), pem('int1.pem') + pem('int0.pem'));
    expect(() => ossl('verify', '-CAfile', 'root.pem', '-untrusted', 'deep-untrusted.pem', 'ekdeep.pem')).toThrow(/path length constraint exceeded/);
    expect(ossl('verify', '-CAfile', 'root.pem', '-untrusted', 'int0.pem', 'ekshallow.pem')).toMatch(/OK/);
    expect(validateEkChain([pem('ekcrit.pem'), pem('int.pem')], [pem('root.pem')]).reason).toBe('CN=unknown: unprocessed critical extension 1.2.3.4.5.6.7');
    // the EK certificate is valid for 365 days, its CAs for 3650
    expect(validateEkChain([pem('ek.pem'), pem('int.pem')], [pem('root.pem')], { at: new Date(Date.now() + 400 * 86_400_000) }).reason).toMatch(/^CN=unknown: not valid at /);
    expect(validateEkChain([pem('ek.pem'), pem('int.pem')], [pem('other.pem')]).reason).toMatch(/^O=HE Test, CN=int: no trusted issuer verifies its signature/);
    expect(validateEkChain(['not a pem'], [pem('root.pem')]).reason).toMatch(/^EK certificate: certificate does not parse/);
  });

  it('CRLs: a revoked EK certificate is refused; a clean CRL passes; a stale or forged CRL refuses the chain', () => {
    const chain = [pem('ek.pem'), pem('int.pem')];
    expect(validateEkChain(chain, [pem('root.pem')], { crls: [readFileSync(f('revoked.crl'))] }).reason).toMatch(/^CN=unknown \(serial 11\): revoked by O=HE Test, CN=int on 2024-01-01/);
    const clean = validateEkChain(chain, [pem('root.pem')], { crls: [pem('clean.crl')] });
    expect(clean.ok, clean.reason).toBe(true);
    expect(clean.reason).toMatch(/1 CRL\(s\) consulted/);
    const later = new Date(Date.now() + 3 * 86_400_000);
    expect(validateEkChain(chain, [pem('root.pem')], { crls: [pem('clean.crl')], at: later }).reason).toMatch(/^CRL of O=HE Test, CN=int: stale \(nextUpdate /);
    expect(validateEkChain(chain, [pem('root.pem')], { crls: [pem('forged.crl')] }).reason).toBe("CRL of O=HE Test, CN=int: signature does not verify with the issuer's key");
    expect(validateEkChain(chain, [pem('root.pem')], { crls: ['garbage'] }).reason).toMatch(/^CRL 0: does not parse/);
  });
});

describe('enrollment uses it', () => {
  it('an enrollment request whose EK certificate lacks the EK EKU is refused before any credential is made', () => {
    writeFileSync(f('policy.json'), JSON.stringify({ schema: 'hyperenclave/verifier-policy', version: 1, akProvenance: { trustedEkCaFiles: ['root.pem'] } }));
    const v = new Verifier({ stateDir: f('vstate'), policyPath: f('policy.json') });
    const req = { ekCertificates: [pem('ektls.pem'), pem('int.pem')], ekPublic: 'AA==', akPublic: 'AA==' };
    expect(() => startEnrollment(v, req)).toThrow(/^enroll: EK certificate: .*lacks tcg-kp-EKCertificate \(2\.23\.133\.8\.1\)/);
    expect(() => startEnrollment(v, { ...req, ekCertificates: [pem('ek.pem'), pem('int.pem')] })).not.toThrow(/EK certificate:/);
  });
});

const swtpmSkip = swtpmAvailable({ ek: true });
describe.skipIf(!!swtpmSkip)('swtpm_setup\'s EK certificate (the honest case)', () => {
  it('validates to swtpm\'s local CA and names the TPM', async () => {
    const d = await startSwtpm({ ek: true });
    const tpm = await openTpm(d.tcti);
    try {
      const ekh = await tpm.createEk('rsa');
      const certs = await clientEnrollingTpm(tpm, ekh, ekh as never).ekCertificates();
      const r = validateEkChain(certs, swtpmCaCertificates(d));
      expect(r.ok, r.reason).toBe(true);
      expect(r.anchor?.subject).toMatch(/swtpm-localca/);
      expect(r.tpm).toMatchObject({ model: 'swtpm' });
    } finally {
      await tpm.close();
      await d.stop();
    }
  }, 60_000);
});
