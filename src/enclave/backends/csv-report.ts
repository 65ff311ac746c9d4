import { timingSafeEqual } from 'node:crypto';
import { type Sm2PrivateKey, type Sm2PublicKey, sm2Sign, sm2SignatureFromRaw, sm2SignatureToRaw, sm2Verify } from '../../crypto/sm2.js';
import { type CsvChain, CsvCertError, verifyCsvChain } from './csv-certs.js';

/**
 * CSV attestation report over the launch measurement and 64 bytes of user data, signed by the
 * PEK with SM2 (ID 1234567812345678). Project format ("HECR"), not Hygon's TeeInfo layout:
 *
 *   off  size  field
 *   0    4     magic "HECR"
 *   4    2     version (1), u16 LE
 *   6    1     api major      7  1  api minor      8  1  build      9  1  reserved (0)
 *   10   4     guest policy, u32 LE
 *   14   32    launch measurement (HMAC-SM3)
 *   46   16    MNONCE of LAUNCH_MEASURE
 *   62   16    chip id
 *   78   64    user data (e.g. a verifier nonce)
 *   142  64    SM2 signature r ‖ s by the PEK over bytes 0..141
 *   206        total
 */
export const REPORT_SIZE = 206;
const SIGNED = 142;

export interface CsvReportBody {
  apiMajor: number;
  apiMinor: number;
  build: number;
  policy: number;
  measurement: Buffer;
  mnonce: Buffer;
  chipId: Buffer;
  userData: Buffer;
}

export function makeCsvReport(body: CsvReportBody, pek: Sm2PrivateKey): Buffer {
  const b = Buffer.alloc(REPORT_SIZE);
  b.write('HECR', 0, 'latin1');
  b.writeUInt16LE(1, 4);
  b[6] = body.apiMajor;
  b[7] = body.apiMinor;
  b[8] = body.build;
  b.writeUInt32LE(body.policy >>> 0, 10);
  const put = (v: Buffer, off: number, len: number, name: string): void => {
    if (v.length !== len) throw new CsvCertError(`CSV report ${name} must be ${len} bytes, got ${v.length}`);
    v.copy(b, off);
  };
  put(body.measurement, 14, 32, 'measurement');
  put(body.mnonce, 46, 16, 'mnonce');
  put(body.chipId, 62, 16, 'chip id');
  put(body.userData, 78, 64, 'user data');
  sm2SignatureToRaw(sm2Sign(pek, b.subarray(0, SIGNED))).copy(b, SIGNED);
  return b;
}

export function parseCsvReport(raw: Uint8Array): CsvReportBody {
  const b = Buffer.from(raw);
  if (b.length !== REPORT_SIZE) throw new CsvCertError(`CSV report: ${b.length} bytes, expected ${REPORT_SIZE}`);
  if (b.toString('latin1', 0, 4) !== 'HECR') throw new CsvCertError('CSV report: bad magic at byte 0');
  if (b.readUInt16LE(4) !== 1) throw new CsvCertError(`CSV report: unsupported version ${b.readUInt16LE(4)} at byte 4`);
  return {
    apiMajor: b[6]!,
    apiMinor: b[7]!,
    build: b[8]!,
    policy: b.readUInt32LE(10),
    measurement: Buffer.from(b.subarray(14, 46)),
    mnonce: Buffer.from(b.subarray(46, 62)),
    chipId: Buffer.from(b.subarray(62, 78)),
    userData: Buffer.from(b.subarray(78, 142)),
  };
}

/**
 * Verifier side: chain to the (pinned) HRK, report signature by the PEK, chip id match, and,
 * when given, the expected measurement and user data.
 */
export function verifyCsvReport(
  report: Uint8Array,
  chain: CsvChain,
  expect: { trustedHrk?: Sm2PublicKey; measurement?: Uint8Array; userData?: Uint8Array } = {},
): CsvReportBody {
  const pek = verifyCsvChain(chain, expect.trustedHrk);
  const body = parseCsvReport(report);
  const r = Buffer.from(report);
  if (!sm2Verify(pek.publicKey, r.subarray(0, SIGNED), sm2SignatureFromRaw(r.subarray(SIGNED))))
    throw new CsvCertError(`CSV report: SM2 signature at byte ${SIGNED} does not verify with the PEK`);
  if (!body.chipId.equals(pek.subject)) throw new CsvCertError('CSV report: chip id (byte 62) differs from the PEK certificate');
  if (expect.measurement && !(expect.measurement.length === 32 && timingSafeEqual(body.measurement, Buffer.from(expect.measurement))))
    throw new CsvCertError(`CSV report: launch measurement ${body.measurement.toString('hex')} (byte 14) is not the expected ${Buffer.from(expect.measurement).toString('hex')}`);
  if (expect.userData && !body.userData.equals(Buffer.from(expect.userData))) throw new CsvCertError('CSV report: user data (byte 78) is not the expected nonce');
  return body;
}
