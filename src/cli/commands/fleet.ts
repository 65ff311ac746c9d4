/**
 * The fleet commands: `agent serve` on every host, `verifier hosts` (list, add, remove) on the
 * verifier side. `verifier serve`'s continuous-attestation flags live with `verifier serve`
 * (attest.ts).
 */
import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { context } from '../context.js';
import { emit, UsageError } from '../output.js';
import { withTpm } from '../tpm-access.js';
import { log } from '../../log.js';
import { HyperEnclaveError, EXIT } from '../../errors.js';
import { clientAttesterTpm } from '../../attest/index.js';
import { collectEvidence } from '../../attest/collect.js';
import { loadStoredAk, readStoredAk } from '../../attest/ak-store.js';
import { drtmLogPath, FIRMWARE_EVENT_LOG, runtimeLogPath } from '../../platform/logs.js';
import { startAgent } from '../../verifier/agent.js';
import { openVerifierStore, type HostRecord } from '../../verifier/store.js';
import { pcrSelectionOf } from '../pcr-selection.js';
import { dbUrlOption, parseListen, tlsOption } from '../server-options.js';

export { dbUrlOption, parseListen, tlsOption };

const age = (t?: number): string => (t ? `${Math.max(0, Math.round((Date.now() - t) / 1000))}s ago` : '-');

function hostsTable(hosts: HostRecord[]): string {
  if (!hosts.length) return 'no hosts under continuous attestation (add one: hyperenclave verifier hosts add ID AGENT-URL)';
  const rows = hosts.map((h) => [h.hostId, h.state.toUpperCase() === 'REVOKED' ? 'REVOKED' : h.state, h.lastStatus ?? '-', age(h.lastAttestedAt), h.revokedAt ? new Date(h.revokedAt).toISOString() : '-', h.agentUrl, h.state === 'affirming' ? '' : (h.lastReason ?? '')]);
  const head = ['host', 'state', 'last verdict', 'attested', 'revoked at', 'agent', 'reason'];
  const w = head.map((x, i) => Math.max(x.length, ...rows.map((r) => r[i]!.length)));
  const line = (c: string[]): string => c.map((x, i) => (i === c.length - 1 ? x : x.padEnd(w[i]!))).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

export function registerFleet(program: Command): void {
  const verifier = program.commands.find((c) => c.name() === 'verifier');
  if (!verifier) throw new Error('register the verifier command before the fleet commands');

  const hosts = verifier
    .command('hosts')
    .description('hosts under continuous attestation: state, last verdict, revocation (from the verifier database)')
    .option('--db <url>', 'the verifier database (default sqlite:<state-dir>/verifier/verifier.db)')
    .addHelpText('after', '\nExamples:\n  hyperenclave verifier hosts\n  hyperenclave verifier hosts --json --db postgresql://verifier@%2Frun%2Fpostgresql/verifier\n  hyperenclave verifier hosts add web-1 https://web-1.example:8438')
    .action(async (o: { db?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const store = await openVerifierStore(dbUrlOption(o.db, platform.stateDir));
      try {
        const list = await store.listHosts();
        const toIso = (t?: number) => (t ? new Date(t).toISOString() : undefined);
        emit(
          opts,
          {
            schema: 'hyperenclave/verifier-hosts',
            version: 1,
            hosts: list.map((h) => ({
              hostId: h.hostId,
              agentUrl: h.agentUrl,
              state: h.state,
              ...(h.lastStatus ? { lastStatus: h.lastStatus } : {}),
              ...(h.lastReason ? { lastReason: h.lastReason } : {}),
              ...(h.lastAttestedAt ? { lastAttestedAt: toIso(h.lastAttestedAt) } : {}),
              ...(h.affirmedAt ? { affirmedAt: toIso(h.affirmedAt) } : {}),
              ...(h.revokedAt ? { revokedAt: toIso(h.revokedAt) } : {}),
              ...(h.akSpkiSha256 ? { akSpkiSha256: h.akSpkiSha256 } : {}),
              failures: h.failures,
              nextDueAt: toIso(h.nextDueAt),
            })),
          },
          () => hostsTable(list),
        );
        if (list.some((h) => h.state === 'revoked')) process.exitCode = EXIT.VERIFY_FAILED;
      } finally {
        await store.close();
      }
    });
  hosts
    .command('add')
    .description('put a host under continuous attestation (again: clears a revocation)')
    .argument('<host-id>', 'a name for the host ([A-Za-z0-9._-], up to 128)')
    .argument('<agent-url>', 'where its agent listens (http(s)://host:port)')
    .option('--db <url>', 'the verifier database (default sqlite:<state-dir>/verifier/verifier.db)')
    .addHelpText('after', '\nExample:\n  hyperenclave verifier hosts add web-1 https://web-1.example:8438')
    .action(async (id: string, url: string, o: { db?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new UsageError(`host id "${id.slice(0, 60)}": use 1-128 of A-Z a-z 0-9 . _ -`);
      if (!/^https?:\/\/[^/]+\/?$/.test(url)) throw new UsageError(`agent URL "${url.slice(0, 80)}": expected http(s)://host:port`);
      const store = await openVerifierStore(dbUrlOption(o.db, platform.stateDir));
      try {
        const had = await store.getHost(id);
        if (had) await store.removeHost(id);
        await store.addHost({ hostId: id, agentUrl: url });
        emit(opts, { schema: 'hyperenclave/verifier-hosts', version: 1, hosts: [{ hostId: id, agentUrl: url, state: 'pending', failures: 0 }] }, () => `${id} (${url}) under continuous attestation${had?.state === 'revoked' ? ' again (revocation cleared)' : ''}`);
      } finally {
        await store.close();
      }
    });
  hosts
    .command('remove')
    .description('stop attesting a host')
    .argument('<host-id>')
    .option('--db <url>', 'the verifier database')
    .addHelpText('after', '\nExample:\n  hyperenclave verifier hosts remove web-1')
    .action(async (id: string, o: { db?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const store = await openVerifierStore(dbUrlOption(o.db, platform.stateDir));
      try {
        if (!(await store.removeHost(id))) throw new HyperEnclaveError(`verifier hosts remove: no host "${id.slice(0, 60)}"`, EXIT.NOT_FOUND);
        emit(opts, { schema: 'hyperenclave/verifier-hosts', version: 1, hosts: [] }, () => `${id} removed`);
      } finally {
        await store.close();
      }
    });

  const agent = program
    .command('agent')
    .description('the attestation agent on each host: answers the verifier\'s challenges with quotes')
    .addHelpText('after', '\nExample:\n  hyperenclave agent serve --listen 0.0.0.0:8438 --tls-cert agent.pem --tls-key agent.key --tls-ca verifier-ca.pem');
  agent
    .command('serve')
    .description('HTTP(S) agent: POST /quote {"nonce": hex} -> evidence bundle over the configured PCRs (the verifier pulls)')
    .option('--listen <host:port>', 'address', '127.0.0.1:8438')
    .option('--pcrs <sel>', 'PCRs to quote, bank:list[+bank:list]', 'sha256:0-7,12,13')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'its private key (PEM)')
    .option('--tls-ca <file>', 'require a client certificate chaining to this CA (mutual TLS with the verifier)')
    .addHelpText('after', '\nExample:\n  hyperenclave agent serve --listen 0.0.0.0:8438 --tls-cert agent.pem --tls-key agent.key --tls-ca verifier-ca.pem')
    .action(async (o: { listen: string; pcrs: string; tlsCert?: string; tlsKey?: string; tlsCa?: string }, cmd: Command) => {
      const { opts, platform } = context(cmd);
      const { host, port } = parseListen(o.listen);
      const pcrSelection = pcrSelectionOf(o.pcrs);
      const tls = tlsOption(o);
      const stored = readStoredAk(platform.stateDir);
      if (!stored) throw new HyperEnclaveError('agent serve: no AK yet: run "hyperenclave ak create" and enroll it with the verifier', EXIT.NOT_FOUND);
      const collect = (nonce: Buffer) => {
        const logs: Record<string, Buffer> = {};
        for (const [kind, path] of [
          ['firmware', FIRMWARE_EVENT_LOG],
          ['runtime', runtimeLogPath(platform.stateDir)],
          ['drtm', drtmLogPath(platform.stateDir)],
        ] as const)
          if (existsSync(path)) logs[kind] = readFileSync(path);
        return withTpm(platform, opts.tcti, async (t) => {
          const { ak, release } = await loadStoredAk(t, stored);
          try {
            return await collectEvidence(clientAttesterTpm(t, ak), {
              nonce,
              ak: { tpmtPublic: Buffer.from(stored.public, 'base64'), pem: stored.pem, name: Buffer.from(stored.name, 'hex') },
              pcrSelection,
              claims: { platformKind: platform.claimedKind },
              logs,
            });
          } finally {
            await release();
          }
        });
      };
      const a = await startAgent({
        collect,
        host,
        port,
        ...(tls ? { tls } : {}),
        onRequest: (e) => (e.status >= 500 ? log().error(e, 'quote failed') : e.status >= 400 ? log().warn(e, 'request refused') : log().info(e, 'quote')),
      });
      emit(opts, { schema: 'hyperenclave/agent-serve', version: 1, url: a.url, pid: process.pid }, () => `agent listening on ${a.url}`);
      log().info({ url: a.url }, 'agent listening');
      const signal = await new Promise<NodeJS.Signals>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await a.close();
      log().info({ signal }, 'agent stopped');
    });
}
