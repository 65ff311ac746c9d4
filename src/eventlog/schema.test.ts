import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { compareReplay, eventLogToJson, parseEventLog, replay, replayToJson } from './index.js';

const DIR = join(import.meta.dirname, '../../test/fixtures/eventlog');
const ajv = new Ajv({ allErrors: true, strict: false });
const load = (n: string) => ajv.compile(JSON.parse(readFileSync(join(import.meta.dirname, '../../schemas', n), 'utf8')));
const eventlogSchema = load('eventlog.schema.json');
const replaySchema = load('eventlog-replay.schema.json');

describe('--json documents match their schemas', () => {
  for (const f of readdirSync(DIR).filter((x) => x.endsWith('.bin'))) {
    it(f, () => {
      const log = parseEventLog(readFileSync(join(DIR, f)));
      const doc = JSON.parse(JSON.stringify(eventLogToJson(log)));
      expect(eventlogSchema(doc), JSON.stringify(eventlogSchema.errors)).toBe(true);
      const r = replay(log);
      const actual = new Map([...r].map(([b, v]) => [b, new Map([...v].map(([p, x]) => [p, p === 7 ? Buffer.alloc(x.length, 1) : x]))]));
      const rep = JSON.parse(JSON.stringify(replayToJson(r, compareReplay(r, actual))));
      expect(replaySchema(rep), JSON.stringify(replaySchema.errors)).toBe(true);
    });
  }
});
