#!/usr/bin/env node
// Under CI (CI=true|1) fails when vitest skipped a test that test/skips-allowed.txt does not name.
// One guard for every skip site, whatever each file's own skip logic: a test whose component was
// simply not installed cannot pass silently in CI. Outside CI it only lists the skips.
//   check-skips.mjs VITEST_JSON_REPORT
import { readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const report = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const allowed = readFileSync(join(root, 'test', 'skips-allowed.txt'), 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
const skipped = [];
for (const file of report.testResults ?? [])
  for (const t of file.assertionResults ?? [])
    if (t.status === 'skipped' || t.status === 'pending' || t.status === 'todo') skipped.push(`${relative(root, file.name)} > ${t.fullName ?? t.title}`);
const ci = process.env.CI === 'true' || process.env.CI === '1';
const unexpected = skipped.filter((s) => !allowed.some((a) => s.includes(a)));
for (const s of skipped) console.log(`${unexpected.includes(s) ? (ci ? 'NOT ALLOWED' : 'skipped') : 'allowed'}  ${s}`);
if (ci && unexpected.length) {
  console.error(`CI: ${unexpected.length} test(s) skipped that test/skips-allowed.txt does not allow (a component a CI machine can have is missing)`);
  process.exit(1);
}
