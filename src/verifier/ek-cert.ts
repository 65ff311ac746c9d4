/**
 * EK certificate chains by the book: RFC 5280 §6.1 basic path validation (name chaining,
 * signatures, validity at the given time, basicConstraints cA on every issuer, pathLenConstraint,
 * keyUsage keyCertSign on issuers, no unprocessed critical extension, revocation by CRLs when the
 * policy supplies them) plus the TCG EK Credential Profile for TPM 2.0 on the leaf (EKU
 * tcg-kp-EKCertificate 2.23.133.8.1, keyUsage keyEncipherment for an RSA EK / keyAgreement for an
 * ECC EK, not a CA, subjectAltName directoryName with tcg-at-tpmManufacturer/Model/Version).
 *
 * Certificates, extensions and CRLs are decoded with @peculiar/x509; signatures are checked by
 * OpenSSL through node:crypto (synchronously, so the verifier's checks stay synchronous).
 * Not processed (a certificate that marks them critical is refused): certificate policies
 * with policy constraints, name constraints; OCSP is not consulted.
 */
import 'reflect-metadata';
import { createHash, verify as cryptoVerify, X509Certificate as NodeCert } from 'node:crypto';
import * as x509 from '@peculiar/x509';

export const OID = {
  ekCertificateEku: '2.23.133.8.1',
  tpmManufacturer: '2.23.133.2.1',
  tpmModel: '2.23.133.2.2',
  tpmVersion: '2.23.133.2.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectDirectoryAttributes: '2.5.29.9',
  authorityKeyIdentifier: '2.5.29.35',
  subjectKeyIdentifier: '2.5.29.14',
  certificatePolicies: '2.5.29.32',
  crlDistributionPoints: '2.5.29.31',
  authorityInfoAccess: '1.3.6.1.5.5.7.1.1',
} as const;

/** Extensions this validator processes; any other extension marked critical fails the path (RFC 5280 §6.1.3/4). */
const PROCESSED = new Set<string>([OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectAltName, OID.subjectDirectoryAttributes, OID.authorityKeyIdentifier, OID.subjectKeyIdentifier, OID.certificatePolicies, OID.crlDistributionPoints, OID.authorityInfoAccess]);

export interface TpmIdentity {
  manufacturer?: string;
  model?: string;
  version?: string;
}

export interface EkChainResult {
  ok: boolean;
  /** One line: why the chain failed, or which anchor it chains to. */
  reason: string;
  /** Subject of the trust anchor that validated the chain. */
  root?: string;
  /** The trust anchor that validated the chain: its subject and SHA-256 of its DER. */
  anchor?: { subject: string; sha256: string };
  /** TPM manufacturer/model/version from the EK certificate's subjectAltName. */
  tpm?: TpmIdentity;
}

export interface EkChainOptions {
  at?: Date;
  /** CRLs (PEM or DER) from the policy; a certificate whose issuer has one is checked against it. */
  crls?: (string | Buffer)[];
  /** Apply the TCG EK profile to the leaf (default true). */
  ekProfile?: boolean;
}

interface Parsed {
  p: x509.X509Certificate;
  n: NodeCert;
  subject: string;
}

const oneLine = (dn: string): string => dn.replace(/\n/g, ', ');

function parseCert(pem: string, what: string): Parsed {
  try {
    const n = new NodeCert(pem);
    return { p: new x509.X509Certificate(n.raw), n, subject: oneLine(n.subject) };
  } catch (e) {
    throw new Error(`${what}: certificate does not parse: ${(e as Error).message}`);
  }
}

/** DER header of the first element inside a SEQUENCE: returns [start, end) of that element. */
function firstElement(der: Buffer): [number, number] {
  const lenAt = (off: number): [number, number] => {
    const b = der[off]!;
    if (b < 0x80) return [b, off + 1];
    const n = b & 0x7f;
    if (n < 1 || n > 4 || off + 1 + n > der.length) throw new Error('bad DER length');
    let len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[off + 1 + i]!;
    return [len, off + 1 + n];
  };
  if (der[0] !== 0x30) throw new Error('not a DER SEQUENCE');
  const [, inner] = lenAt(1);
  const [len, body] = lenAt(inner + 1);
  if (body + len > der.length) throw new Error('DER element runs past the end');
  return [inner, body + len];
}

const HASH: Record<string, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };

/** A CRL's signature, checked with the issuer's key by OpenSSL (RSA PKCS#1 v1.5 or ECDSA). */
function crlSignatureValid(crl: x509.X509Crl, issuer: NodeCert): boolean {
  const der = Buffer.from(crl.rawData);
  const [s, e] = firstElement(der);
  const alg = crl.signatureAlgorithm as { name: string; hash?: { name: string } };
  const hash = alg.hash ? HASH[alg.hash.name] : undefined;
  if (!hash || (alg.name !== 'ECDSA' && alg.name !== 'RSASSA-PKCS1-v1_5')) return false;
  return cryptoVerify(hash, der.subarray(s, e), issuer.publicKey, Buffer.from(crl.signature));
}

function parseCrl(c: string | Buffer): x509.X509Crl {
  return new x509.X509Crl(typeof c === 'string' && !c.includes('-----BEGIN') ? Buffer.from(c, 'base64') : c);
}

function tpmIdentityOf(cert: x509.X509Certificate): TpmIdentity | undefined {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return undefined;
  for (const g of san.names.items) {
    if (g.type !== 'dn') continue;
    const attrs: Record<string, string> = {};
    for (const rdn of new x509.Name(g.value).toJSON()) for (const [k, v] of Object.entries(rdn)) if (v[0] !== undefined) attrs[k] = v[0];
    const id: TpmIdentity = {
      ...(attrs[OID.tpmManufacturer] ? { manufacturer: attrs[OID.tpmManufacturer] } : {}),
      ...(attrs[OID.tpmModel] ? { model: attrs[OID.tpmModel] } : {}),
      ...(attrs[OID.tpmVersion] ? { version: attrs[OID.tpmVersion] } : {}),
    };
    if (id.manufacturer || id.model || id.version) return id;
  }
  return undefined;
}

/** The TCG EK profile on the leaf; undefined when it conforms, else the one-line reason. */
function ekProfileProblem(leaf: Parsed): { problem?: string; tpm?: TpmIdentity } {
  const c = leaf.p;
  const eku = c.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku) return { problem: `EK certificate ${leaf.subject}: no extendedKeyUsage; the TCG EK profile requires tcg-kp-EKCertificate (${OID.ekCertificateEku})` };
  if (!eku.usages.map(String).includes(OID.ekCertificateEku)) return { problem: `EK certificate ${leaf.subject}: extendedKeyUsage ${eku.usages.map(String).join(',')} lacks tcg-kp-EKCertificate (${OID.ekCertificateEku}): not an EK certificate` };
  const bc = c.getExtension(x509.BasicConstraintsExtension);
  if (bc?.ca) return { problem: `EK certificate ${leaf.subject}: basicConstraints cA is true (an EK certificate is not a CA)` };
  const ku = c.getExtension(x509.KeyUsagesExtension);
  const kind = leaf.n.publicKey.asymmetricKeyType;
  const need = kind === 'rsa' ? x509.KeyUsageFlags.keyEncipherment : kind === 'ec' ? x509.KeyUsageFlags.keyAgreement : undefined;
  if (need === undefined) return { problem: `EK certificate ${leaf.subject}: key type ${kind} is neither RSA nor ECC` };
  if (!ku) return { problem: `EK certificate ${leaf.subject}: no keyUsage (the TCG EK profile requires ${kind === 'rsa' ? 'keyEncipherment' : 'keyAgreement'})` };
  if (!(ku.usages & need)) return { problem: `EK certificate ${leaf.subject}: keyUsage lacks ${kind === 'rsa' ? 'keyEncipherment (RSA EK)' : 'keyAgreement (ECC EK)'}` };
  const tpm = tpmIdentityOf(c);
  if (!tpm?.manufacturer || !tpm.model || !tpm.version) return { problem: `EK certificate ${leaf.subject}: subjectAltName lacks the TPM manufacturer, model and version (2.23.133.2.1/.2/.3)` };
  return { tpm };
}

/**
 * Validates [EK certificate, ...intermediates] up to one of `trustedPem` (trust anchors).
 * Never throws: a bad chain is { ok: false, reason }.
 */
export function validateEkChain(chainPem: string[], trustedPem: string[], opts: EkChainOptions = {}): EkChainResult {
  const at = opts.at ?? new Date();
  if (!chainPem.length) return { ok: false, reason: 'no certificate' };
  let certs: Parsed[];
  let anchors: Parsed[];
  let crls: x509.X509Crl[];
  try {
    certs = chainPem.map((p, i) => parseCert(p, i === 0 ? 'EK certificate' : `chain certificate ${i}`));
    anchors = trustedPem.map((p, i) => parseCert(p, `trusted CA ${i}`));
    crls = (opts.crls ?? []).map((c, i) => {
      try {
        return parseCrl(c);
      } catch (e) {
        throw new Error(`CRL ${i}: does not parse: ${(e as Error).message}`);
      }
    });
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }

  // Build the path leaf -> ... -> anchor by name chaining and signature.
  // Name chaining by DN (OpenSSL's checkIssued would also apply key-usage rules, hiding the reason).
  const issues = (issuer: Parsed, c: Parsed): boolean => issuer.n.subject === c.n.issuer && c.n.verify(issuer.n.publicKey);
  const path: Parsed[] = [certs[0]!];
  let anchor: Parsed | undefined;
  const pool = certs.slice(1);
  for (let depth = 0; depth < 8 && !anchor; depth++) {
    const cur = path[path.length - 1]!;
    anchor = anchors.find((a) => issues(a, cur));
    if (anchor) break;
    const issuer = pool.find((p) => !path.includes(p) && issues(p, cur));
    if (!issuer) return { ok: false, reason: `${cur.subject}: no trusted issuer verifies its signature (issuer ${oneLine(cur.n.issuer)})` };
    path.push(issuer);
  }
  if (!anchor) return { ok: false, reason: 'chain too long (more than 8 certificates)' };

  const valid = (c: Parsed): boolean => new Date(c.n.validFrom) <= at && at <= new Date(c.n.validTo);
  if (!valid(anchor)) return { ok: false, reason: `trusted CA ${anchor.subject}: not valid at ${at.toISOString()} (${anchor.n.validFrom} – ${anchor.n.validTo})` };

  // Walk from the anchor down (RFC 5280 §6.1: i = 1 .. n), issuers before the certificates they issued.
  const down = [...path].reverse();
  const anchorPathLen = anchor.p.getExtension(x509.BasicConstraintsExtension)?.pathLength;
  let maxPath = anchorPathLen ?? Infinity;
  const issuerOf = (i: number): Parsed => (i === 0 ? anchor! : down[i - 1]!);
  for (let i = 0; i < down.length; i++) {
    const c = down[i]!;
    const issuer = issuerOf(i);
    const isLeaf = i === down.length - 1;
    if (!valid(c)) return { ok: false, reason: `${c.subject}: not valid at ${at.toISOString()} (${c.n.validFrom} – ${c.n.validTo})` };
    // The issuer must be a CA allowed to sign certificates (the anchor included when it is a certificate).
    const ibc = issuer.p.getExtension(x509.BasicConstraintsExtension);
    if (!ibc?.ca) return { ok: false, reason: `${issuer.subject}: issuer is not a CA (basicConstraints cA absent or false)` };
    const iku = issuer.p.getExtension(x509.KeyUsagesExtension);
    if (iku && !(iku.usages & x509.KeyUsageFlags.keyCertSign)) return { ok: false, reason: `${issuer.subject}: issuer keyUsage lacks keyCertSign` };
    for (const e of c.p.extensions) if (e.critical && !PROCESSED.has(e.type)) return { ok: false, reason: `${c.subject}: unprocessed critical extension ${e.type}` };
    // Revocation: the CRL(s) this certificate's issuer signed.
    const mine = crls.filter((l) => oneLine(l.issuer) === oneLine(issuer.p.subject));
    for (const l of mine) {
      if (!crlSignatureValid(l, issuer.n)) return { ok: false, reason: `CRL of ${issuer.subject}: signature does not verify with the issuer's key` };
      if (l.thisUpdate > at) return { ok: false, reason: `CRL of ${issuer.subject}: not yet valid (thisUpdate ${l.thisUpdate.toISOString()})` };
      if (l.nextUpdate && l.nextUpdate < at) return { ok: false, reason: `CRL of ${issuer.subject}: stale (nextUpdate ${l.nextUpdate.toISOString()})` };
      const revoked = l.findRevoked(c.p);
      if (revoked) return { ok: false, reason: `${c.subject} (serial ${c.p.serialNumber}): revoked by ${issuer.subject} on ${revoked.revocationDate.toISOString()}` };
    }
    if (!isLeaf) {
      // An intermediate: counts against every pathLenConstraint above it (self-issued ones do not).
      const selfIssued = c.n.subject === c.n.issuer;
      if (!selfIssued) {
        if (maxPath <= 0) return { ok: false, reason: `${c.subject}: exceeds the pathLenConstraint of a CA above it` };
        maxPath--;
      }
      const bc = c.p.getExtension(x509.BasicConstraintsExtension);
      if (bc?.pathLength !== undefined) maxPath = Math.min(maxPath, bc.pathLength);
    }
  }

  const anchorInfo = { subject: anchor.subject, sha256: createHash('sha256').update(anchor.n.raw).digest('hex') };
  let tpm: TpmIdentity | undefined;
  if (opts.ekProfile !== false) {
    const prof = ekProfileProblem(certs[0]!);
    if (prof.problem) return { ok: false, reason: prof.problem, anchor: anchorInfo };
    tpm = prof.tpm;
  }
  return {
    ok: true,
    reason: `chains to ${anchor.subject} (RFC 5280 path of ${path.length}${crls.length ? `, ${crls.length} CRL(s) consulted` : ''}${tpm ? `; TPM ${tpm.manufacturer} ${tpm.model} ${tpm.version}` : ''})`,
    root: anchor.n.subject,
    anchor: anchorInfo,
    ...(tpm ? { tpm } : {}),
  };
}
