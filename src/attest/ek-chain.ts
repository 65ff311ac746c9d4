import { X509Certificate } from 'node:crypto';
import { validateEkChain } from '../verifier/ek-cert.js';

/**
 * Checks an EK certificate chain [leaf, ...intermediates] up to one of the trusted CAs: RFC 5280
 * path validation, the TCG EK profile, CRLs when given (src/verifier/ek-cert.ts). `root` is the
 * subject of the trust anchor that validated it.
 */
export function verifyCertChain(chainPem: string[], trustedPem: string[], at = new Date(), crls?: (string | Buffer)[]): { ok: boolean; reason: string; root?: string; anchor?: { subject: string; sha256: string } } {
  return validateEkChain(chainPem, trustedPem, { at, ...(crls?.length ? { crls } : {}) });
}

/** True when a CA name says it is swtpm's local CA (swtpm_localca: "swtpm-localca-rootca", "swtpm-localca"). */
function isSwtpmName(name: string): boolean {
  return /swtpm/i.test(name);
}

/**
 * The platform kind an EK certificate chain shows: `emulated` when it chains to (or is issued by)
 * swtpm's local CA, `real` when it chains to another CA the policy trusts, `unknown` when it
 * does not chain to a trusted CA at all.
 */
export function platformKindOfEk(chainPem: string[], trustedPem: string[]): { kind: 'real' | 'emulated' | 'unknown'; reason: string } {
  const chain = verifyCertChain(chainPem, trustedPem);
  if (!chain.ok) return { kind: 'unknown', reason: `EK certificate: ${chain.reason}` };
  let names: string[] = [];
  try {
    const certs = chainPem.map((p) => new X509Certificate(p));
    names = [...certs.map((c) => c.issuer), ...certs.slice(1).map((c) => c.subject), chain.root ?? ''];
  } catch {
    return { kind: 'unknown', reason: 'EK certificate does not parse' };
  }
  const swtpm = names.find(isSwtpmName);
  if (swtpm) return { kind: 'emulated', reason: `EK certificate chains to swtpm's local CA (${swtpm.replace(/\n/g, ', ')})` };
  return { kind: 'real', reason: `EK certificate ${chain.reason}` };
}

