import { EXIT, HyperEnclaveError } from '../errors.js';

/**
 * Bad or unreadable event log. `offset` is the byte offset in the log where the problem was
 * found and `field` names the structure field being read, so the one-line message can say
 * exactly what is wrong and where.
 */
export class EventLogError extends HyperEnclaveError {
  readonly offset: number | undefined;
  readonly field: string | undefined;
  /** The input ended inside a structure (as opposed to holding a wrong value). */
  readonly truncated: boolean;
  constructor(message: string, where: { offset?: number; field?: string; truncated?: boolean } = {}, options?: { cause?: unknown }) {
    const loc = [where.field !== undefined ? `field ${where.field}` : '', where.offset !== undefined ? `offset ${where.offset} (0x${where.offset.toString(16)})` : '']
      .filter(Boolean)
      .join(', ');
    super(loc ? `event log: ${message} [${loc}]` : `event log: ${message}`, EXIT.BAD_INPUT, options);
    this.offset = where.offset;
    this.field = where.field;
    this.truncated = where.truncated ?? false;
  }
}
