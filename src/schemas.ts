import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import type { Ajv as AjvType, ErrorObject } from 'ajv';

/** schemas/ at the package root, from src/ (vitest) and from dist/src/ (built). */
export function schemasDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'schemas');
    try {
      readFileSync(join(candidate, 'config.schema.json'));
      return candidate;
    } catch {
      dir = dirname(dir);
    }
  }
  throw new Error('schemas/ directory not found next to the package');
}

// Loaded on the first validation: a command that validates nothing does not pay for ajv.
let ajvInstance: AjvType | undefined;
function ajv(): AjvType {
  if (!ajvInstance) {
    const { Ajv } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
    ajvInstance = new Ajv({ allErrors: true, strict: false, useDefaults: false });
  }
  return ajvInstance;
}

function describe(errors: ErrorObject[]): string {
  return errors
    .map((e) => {
      const at = e.instancePath || '/';
      if (e.keyword === 'additionalProperties') return `${at}: unknown property "${(e.params as { additionalProperty: string }).additionalProperty}"`;
      if (e.keyword === 'enum') return `${at}: must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
      return `${at}: ${e.message ?? e.keyword}`;
    })
    .join('; ');
}

/**
 * Compiles schemas/<file> once; the returned function gives undefined for a valid document,
 * else every problem with its JSON path on one line.
 */
export function compileSchema<T>(file: string): (doc: unknown) => string | undefined {
  let fn: ((d: unknown) => boolean) & { errors?: ErrorObject[] | null } | undefined;
  return (doc: unknown) => {
    if (!fn) {
      const schema = JSON.parse(readFileSync(join(schemasDir(), file), 'utf8')) as object & { $id?: string };
      fn = (schema.$id && ajv().getSchema(schema.$id)) || ajv().compile<T>(schema);
    }
    return fn(doc) ? undefined : describe(fn.errors ?? []);
  };
}
