/** TPM 2.0 client: public API. */
import { TpmClient, type TpmClientOptions } from './client.js';
import { openTransport, tctiFromEnv } from './tcti.js';

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
 * Opens a TPM: the given TCTI, else HYPERENCLAVE_TCTI / TPM2TOOLS_TCTI, else the platform's
 * default TPM (/dev/tpmrm0 on Linux hardware, the emulated platform's swtpm otherwise).
 */
export async function openTpm(tcti?: string, opts: TpmClientOptions & { timeoutMs?: number } = {}): Promise<TpmClient> {
  let chosen = tcti ?? tctiFromEnv();
  if (!chosen) {
    const { openPlatform } = await import('../platform/index.js');
    chosen = await openPlatform().defaultTcti();
  }
  return new TpmClient(openTransport(chosen, opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}), opts);
}
