import { readFileSync, existsSync } from 'node:fs';
import { HyperEnclaveError, EXIT, jsonSyntaxProblem } from '../errors.js';
import { compileSchema } from '../schemas.js';
import type { BackendKind } from '../enclave/backends/kind.js';
import { readTextFile } from '../platform/bounded-read.js';

export interface HyperEnclaveConfig {
  schema: 'hyperenclave/config';
  version: 1;
  platform?: 'auto' | 'linux' | 'emulated';
  stateDir?: string;
  image?: string;
  imageSigner?: string;
  pcrPolicy?: string;
  drtm?: { enabled?: boolean; required?: boolean };
  memory?: { hypervisorMiB?: number; epcMiB?: number; reservedBase?: string };
  backends?: BackendKind[];
  verifier?: { endpoint?: string; listen?: string; policy?: string };
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
}

export const DEFAULT_CONFIG_PATH = '/etc/hyperenclave/config.json';

export class ConfigError extends HyperEnclaveError {
  constructor(message: string) {
    super(message, EXIT.BAD_INPUT);
  }
}

const validate = compileSchema<HyperEnclaveConfig>('config.schema.json');

/** Parses and validates a configuration document; every problem is named by its JSON path. */
export function parseConfig(text: string, source = 'config'): HyperEnclaveConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${source}: not JSON: ${jsonSyntaxProblem(e, text)}`);
  }
  const problems = validate(doc);
  if (problems) throw new ConfigError(`${source}: ${problems}`);
  return doc as HyperEnclaveConfig;
}

/** Loads the config file; an absent default file yields the built-in defaults, an absent explicit one is an error. */
export function loadConfig(path?: string): HyperEnclaveConfig {
  const p = path ?? process.env.HYPERENCLAVE_CONFIG ?? DEFAULT_CONFIG_PATH;
  if (!existsSync(p)) {
    if (path) throw new HyperEnclaveError(`config ${p}: no such file`, EXIT.NOT_FOUND);
    return { schema: 'hyperenclave/config', version: 1 };
  }
  return parseConfig(readTextFile(p, { what: 'config', kind: 'document' }), p);
}
