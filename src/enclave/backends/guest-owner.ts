import { randomBytes, timingSafeEqual } from 'node:crypto';
import { EXIT } from '../../errors.js';
import { BackendError } from './errors.js';
import { type FirmwareSuite, type LaunchImage, SEV_SUITE, expectedSevMeasurement, packageLaunchSecret } from './sev-firmware.js';
import type { LaunchMeasurement } from './types.js';

export class MeasurementMismatchError extends BackendError {
  constructor(message: string) {
    super(message, EXIT.VERIFY_FAILED);
  }
}

/** The reported launch fields a verifier checks (a LaunchMeasurement or the fields of a CSV report). */
export type ReportedLaunch = Pick<LaunchMeasurement, 'measurement' | 'mnonce' | 'apiMajor' | 'apiMinor' | 'build' | 'policy'>;

/**
 * Verifier check for SEV (HMAC-SHA-256) or CSV (HMAC-SM3, pass CSV_SUITE): recompute the
 * measurement from the image alone with the owner's TIK and the reported API/build/MNONCE, and
 * compare. Throws MeasurementMismatchError naming what differs.
 */
export function verifySevMeasurement(
  launch: ReportedLaunch,
  image: LaunchImage | Uint8Array,
  policy: number,
  tik: Uint8Array,
  suite: FirmwareSuite = SEV_SUITE,
  minApi?: { apiMajor: number; apiMinor: number },
): void {
  if (launch.policy !== policy) throw new MeasurementMismatchError(`launch policy 0x${launch.policy.toString(16)} is not the expected 0x${policy.toString(16)}`);
  if (minApi && (launch.apiMajor < minApi.apiMajor || (launch.apiMajor === minApi.apiMajor && launch.apiMinor < minApi.apiMinor)))
    throw new MeasurementMismatchError(`firmware API ${launch.apiMajor}.${launch.apiMinor} is below the required ${minApi.apiMajor}.${minApi.apiMinor}`);
  const expected = expectedSevMeasurement(image, policy, launch, launch.build, launch.mnonce, tik, suite);
  const got = Buffer.from(launch.measurement);
  if (got.length !== expected.length || !timingSafeEqual(got, expected))
    throw new MeasurementMismatchError(`launch measurement ${got.toString('hex')} is not the expected ${expected.toString('hex')} for this image and policy`);
}

/**
 * The guest owner (verifier) of an SEV/CSV launch: holds TEK/TIK, recomputes the expected
 * measurement from the image alone, and releases a secret only when the platform's measurement
 * matches.
 */
export class SevGuestOwner {
  readonly tek: Buffer;
  readonly tik: Buffer;

  constructor(
    readonly suite: FirmwareSuite = SEV_SUITE,
    session?: { tek: Buffer; tik: Buffer },
  ) {
    this.tek = session?.tek ?? randomBytes(16);
    this.tik = session?.tik ?? randomBytes(16);
  }

  session(): { tek: Buffer; tik: Buffer } {
    return { tek: Buffer.from(this.tek), tik: Buffer.from(this.tik) };
  }

  /** Throws MeasurementMismatchError unless `launch` is what `image` + `policy` should give on this firmware version. */
  verifyLaunch(launch: LaunchMeasurement, image: LaunchImage | Uint8Array, policy: number, minApi?: { apiMajor: number; apiMinor: number }): void {
    verifySevMeasurement(launch, image, policy, this.tik, this.suite, minApi);
  }

  /** Verify, then package `secret` for LAUNCH_SECRET (header + TEK-encrypted data, MAC'd with TIK over the measurement). */
  releaseSecret(launch: LaunchMeasurement, image: LaunchImage | Uint8Array, policy: number, secret: Uint8Array): { header: Buffer; data: Buffer } {
    this.verifyLaunch(launch, image, policy);
    return packageLaunchSecret(this.suite, this, secret, launch.measurement, launch);
  }
}
