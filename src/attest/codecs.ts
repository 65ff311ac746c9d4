/**
 * Evidence formats, one codec each: what `hyperenclave attest` writes (export) and what the
 * verifier reads (import) go through this registry, each JSON output with its schema. A new
 * format is one entry here, its schema in schemas/, and its tests (codecs.test.ts checks that
 * every JSON codec names a schema that exists).
 */
import { compileSchema } from '../schemas.js';
import { AttestError } from './errors.js';
import { inputFromTpm2ToolsFiles, prepareEvidence, type Evidence } from './evidence.js';
import { exportTpm2Tools, keylimeQuotes } from './export.js';
import { writeFileAtomic } from '../fs/atomic.js';
import type { VerifyInput } from './types.js';

export type EvidenceFormat = 'bundle' | 'tpm2-tools' | 'keylime';

export interface ExportResult {
  files: string[];
  /** tpm2-tools: one `tpm2_checkquote …` per quote, runnable in the export directory. */
  commands?: string[];
}

export interface EvidenceCodec {
  readonly format: EvidenceFormat;
  /** schemas/<file> the exported JSON document satisfies; absent for a format of binary files. */
  readonly schema?: string;
  /** Writes the evidence in this format at `target` (a file, or a directory for tpm2-tools), atomically per file. */
  export(ev: Evidence, target: string, opts: { akHash?: string }): ExportResult;
  /** The JSON document this format writes (JSON formats only). */
  document?(ev: Evidence): unknown;
  /** Reads this format as what the verifier checks (the formats the verifier accepts; its source type is the codec's own). */
  import?: (source: never) => { input?: VerifyInput };
}

const jsonCodec = (format: EvidenceFormat, schema: string, document: (ev: Evidence) => unknown): EvidenceCodec => {
  const validate = compileSchema(schema);
  return {
    format,
    schema,
    document,
    export(ev, target) {
      const doc = document(ev);
      const bad = validate(doc);
      if (bad) throw new AttestError(`${format} export: the document does not satisfy schemas/${schema}: ${bad}`);
      writeFileAtomic(target, JSON.stringify(doc, null, 2) + '\n', 0o644);
      return { files: [target] };
    },
  };
};

/** Every evidence format, by name. */
export const EVIDENCE_CODECS = {
  bundle: {
    ...jsonCodec('bundle', 'evidence.schema.json', (ev) => ev),
    import: (doc: unknown) => prepareEvidence(doc),
  },
  'tpm2-tools': {
    format: 'tpm2-tools',
    export(ev, dir, opts) {
      const x = exportTpm2Tools(ev, dir, opts.akHash);
      return { files: x.files, commands: x.commands };
    },
    import: (files: Parameters<typeof inputFromTpm2ToolsFiles>[0]) => ({ input: inputFromTpm2ToolsFiles(files) }),
  },
  keylime: jsonCodec('keylime', 'keylime-quotes.schema.json', (ev) => ({ schema: 'hyperenclave/keylime-quotes', version: 1, quotes: keylimeQuotes(ev) })),
} satisfies Record<EvidenceFormat, EvidenceCodec>;

/** Writes one bundle in every requested format; files in the order written, and tpm2_checkquote commands when asked. */
export function exportEvidence(ev: Evidence, targets: Partial<Record<EvidenceFormat, string>>, opts: { akHash?: string } = {}): { files: string[]; checkquote?: string[] } {
  const files: string[] = [];
  let checkquote: string[] | undefined;
  for (const format of Object.keys(EVIDENCE_CODECS) as EvidenceFormat[]) {
    const target = targets[format];
    if (!target) continue;
    const r = (EVIDENCE_CODECS[format] as EvidenceCodec).export(ev, target, opts);
    files.push(...r.files);
    if (r.commands) checkquote = r.commands;
  }
  return { files, ...(checkquote ? { checkquote } : {}) };
}
