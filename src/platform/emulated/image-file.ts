import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { EXIT } from '../../errors.js';
import { readFileBounded } from '../../fs/bounded-read.js';
import { HypervisorError } from '../../hypervisor/abi.js';

/** The image to load: a measured container (src/measure) when it parses as one, else any file by its SHA-256. */
export async function describeImage(path: string): Promise<{ id: string; path: string; sha256: string; format: 'container' | 'raw'; length: number }> {
  if (!existsSync(path)) throw new HypervisorError(`load: ${path} not found`, EXIT.NOT_FOUND);
  const bytes = readFileBounded(path, { what: 'load', kind: 'image' });
  const measure = await import('../../measure/index.js').catch(() => undefined);
  if (measure && bytes.subarray(0, 8).equals(measure.IMAGE_MAGIC)) {
    const v = await measure.verifyContainerFile(path, { banks: ['sha256'] });
    return { id: v.id, path, sha256: v.header.imageSha256.toString('hex'), format: 'container', length: v.containerLength };
  }
  const sha = createHash('sha256').update(bytes).digest('hex');
  return { id: sha, path, sha256: sha, format: 'raw', length: bytes.length };
}

