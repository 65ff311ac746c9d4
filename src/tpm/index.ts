/** TPM 2.0 client: public API. */
import { TpmClient, type TpmClientOptions } from './client.js';
import { openTransport, tctiFromEnv } from './tcti.js';
import { TpmUsageError } from './errors.js';

export * from './alg.js';
export * from './constants.js';
export * from './errors.js';
export * from './marshal.js';
export * from './structures.js';
export * from './crypto.js';
export * from './session.js';
export * from './templates.js';
export * from './policy.js';
export * from './verify.js';
export * from './signing-key.js';
export * from './tcti.js';
export * from './transport/index.js';
export * from './client.js';

/**
 * Opens a TPM: the given TCTI, else HYPERENCLAVE_TCTI / TPM2TOOLS_TCTI. The platform's own TPM
 * and the configuration are not known here: callers resolve the TCTI with Platform.resolveTcti.
 */
export async function openTpm(tcti?: string, opts: TpmClientOptions & { timeoutMs?: number } = {}): Promise<TpmClient> {
  const chosen = tcti ?? tctiFromEnv();
  if (!chosen) throw new TpmUsageError('no TPM named: give a TCTI (--tcti, HYPERENCLAVE_TCTI / TPM2TOOLS_TCTI, the configuration\'s tcti) or the platform\'s own (Platform.resolveTcti)');
  return new TpmClient(openTransport(chosen, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}), opts);
}
