// The Temporal Web UI explains a ferry operation by itself (ARCHITECTURE.md section 3, "What the
// Web UI shows"): headless Debian Chromium driven by playwright-core against a dev server WITH
// its UI (the runner's server is headless, so this file starts its own on free ports). Through
// the real API: provision a VM, live-migrate it with approveSwitchover (held in pre-copy), then
// assert the workflow list shows the summary (as a column), the workflow page the current details and
// the activity summaries, a search by TargetHost="h2" finds it; approve; assert the ended page.
// Screenshots go to test/ui/screenshots/ (gitignored; FERRY_UI_SCREENSHOTS overrides), printed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { BrowserContext, Page } from 'playwright-core';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../api/app.js';
import { freePort, startDevServer, type DevServer } from '../../workers/dev-server.js';
import { PROJECT_ROOT } from '../../workers/temporal-cli.js';
import { migrationProgressQuery } from '../../workflows/definitions.js';
import { ADMIN, testConfig } from '../helpers/api.js';
import { startTestFerry, waitFor, type TestFerry } from '../helpers/ferry.js';

const CHROMIUM = '/usr/bin/chromium';
// the flags this machine needs (env notes): no sandbox as root, and no background connections,
// which the closed network refuses
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const MiB = 1024 * 1024;
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)`;

describe('Temporal Web UI shows what a live migration does', { skip }, () => {
  let server: DevServer;
  let f: TestFerry;
  let app: FastifyInstance;
  let browser: BrowserContext;
  let page: Page;
  let profileDir: string;
  const shots = process.env.FERRY_UI_SCREENSHOTS ?? join(PROJECT_ROOT, 'test', 'ui', 'screenshots');

  before(async () => {
    server = await startDevServer({ headless: false, uiPort: await freePort(), log: () => undefined });
    process.env.FERRY_TEST_TEMPORAL_ADDRESS = server.address; // this file's ferry uses the server with the UI
    f = await startTestFerry();
    app = await buildApp({
      db: f.db,
      temporal: f.client,
      config: testConfig(f.dir, { webUiBaseUrl: server.uiUrl! }),
      registry: new Registry(),
      taskQueuePrefix: f.prefix,
      env: {},
    });
    await app.ready();
    const { chromium } = await import('playwright-core');
    profileDir = mkdtempSync(join(tmpdir(), 'ferry-chromium-'));
    // a fresh, empty profile (playwright passes it as --user-data-dir)
    browser = await chromium.launchPersistentContext(profileDir, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1600, height: 1000 } });
    page = browser.pages()[0] ?? (await browser.newPage());
    mkdirSync(shots, { recursive: true });
    console.log(`# web-ui screenshots: ${shots} (Web UI ${server.uiUrl})`);
  });

  after(async () => {
    await browser?.close();
    await app?.close();
    await f?.close();
    await server?.stop();
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  });

  const api = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
    const r = await app.inject({ method, url, headers: { authorization: `Bearer ${ADMIN}` }, ...(body !== undefined ? { payload: body as object } : {}) });
    assert.ok(r.statusCode < 300, `${method} ${url}: ${r.statusCode} ${r.body}`);
    return r.json() as Record<string, unknown>;
  };
  const shot = async (name: string) => {
    const path = join(shots, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`# screenshot ${path}`);
  };
  /** the page of the run, on its User Metadata tab (summary, details, current details, events with metadata) */
  let metadataTab = false;
  const open = async (url: string, tab = false) => {
    metadataTab = tab;
    await page.goto(url, { waitUntil: 'domcontentloaded' });
    if (tab) await page.getByText('User Metadata', { exact: true }).first().click({ timeout: 20_000 });
  };
  /** waits until `text` is on the page; every 5 s reloads it (the UI polls too, a reload is certain) */
  const seeText = async (text: string | RegExp, what: string, timeoutMs = 40_000) => {
    const deadline = Date.now() + timeoutMs;
    for (let i = 1; ; i++) {
      // the UI renders summary, details and current details as markdown inside iframes: read every frame
      const texts = await Promise.all(page.frames().map((fr) => fr.evaluate(() => document.body?.innerText ?? '').catch((e: Error) => `(frame not readable: ${e.message})`)));
      const body = texts.join('\n');
      if (typeof text === 'string' ? body.includes(text) : text.test(body)) return body;
      if (Date.now() > deadline) {
        await shot(`failed-${what.replace(/\W+/g, '-')}`);
        assert.fail(`${what}: ${String(text)} not on ${page.url()}; the page says:\n${body.slice(0, 3000)}`);
      }
      await new Promise((r) => setTimeout(r, 500));
      if (i % 10 === 0) await open(page.url(), metadataTab).catch(() => undefined);
    }
  };

  test('list: summary; page: current details and activity summaries; search TargetHost; ended page', async () => {
    const ns = encodeURIComponent(server.namespace);
    const vm = await api('POST', '/v1/vms', {
      name: 'ui-web',
      cpus: 1,
      memoryMiB: 1024,
      diskGiB: 2,
      template: 'small',
      hostId: 'h1',
      workload: { dirtyRateBytesPerSec: 50 * MiB, writableWorkingSetBytes: 256 * MiB },
    });
    const vmId = vm.vmId as string;
    await f.client.workflow.getHandle(vm.workflowId as string).result();

    const mig = await api('POST', `/v1/vms/${vmId}/migrations`, { kind: 'live', targetHostId: 'h2', approveSwitchover: true });
    const workflowId = mig.migrationId as string;
    assert.equal(mig.webUiUrl, `${server.uiUrl}/namespaces/${ns}/workflows/${encodeURIComponent(workflowId)}`);
    const handle = f.client.workflow.getHandle(workflowId);
    await waitFor('held in pre-copy, awaiting approval', async () => {
      const q = await handle.query(migrationProgressQuery);
      return q.awaitingApproval && q.progress.round >= 2;
    });
    const summary = `live-migrate ui-web (${vmId}) h1 → h2 (policy default)`;

    // ---- the workflow list shows the summary. The list of Server 1.29 / UI 2.42 has no column
    // for the static summary (ListWorkflowExecutions does not return it), so ferry sets it as the
    // OperationSummary search attribute too; an operator adds that column once, as done here.
    await open(`${server.uiUrl}/namespaces/${ns}/workflows`);
    await page.getByTestId('workflows-summary-table-configuration-button').click();
    for (const col of ['Run ID', 'Start']) await page.getByTestId(`orderable-list-item-${col}-remove-button`).click();
    for (const col of ['OperationSummary', 'Stage', 'TargetHost']) await page.getByTestId(`orderable-list-item-${col}-add-button`).click();
    await page.getByTestId('drawer-close-button').click();
    await page.getByText('Configure Workflows Table').waitFor({ state: 'hidden' }).catch(() => undefined);
    await seeText(summary, 'summary in the workflow list');
    await seeText(`provision ui-web (1 vCPU, 1024 MiB) from small`, 'provision summary in the list');
    await shot('1-workflow-list');

    // ---- the workflow page: static details, current details, activity summaries
    await open(mig.webUiUrl as string, true);
    await seeText(summary, 'summary on the workflow page');
    await seeText('live migration inputs', 'static details on the workflow page');
    await seeText('awaiting switchover approval', 'current details on the workflow page');
    await seeText(/stage 2 pre-copy on h1: watch precopy \(round \d+\)/, 'activity summary of a pre-copy watch');
    const body = await seeText('stage 1 reservation on h2: start destination container', 'activity summary naming stage and host');
    assert.match(body, /verdict/, 'the current details name the verdict');
    await shot('2-workflow-page-precopy');

    // ---- a search by TargetHost finds it
    const query = encodeURIComponent('TargetHost="h2"');
    await open(`${server.uiUrl}/namespaces/${ns}/workflows?query=${query}`);
    const found = await seeText(summary, 'TargetHost="h2" search');
    assert.ok(!found.includes('provision ui-web'), 'the search shows only the migration, not the provisioning');
    await shot('3-search-target-host');

    // ---- approve the switchover; the ended page says completed
    await api('POST', `/v1/migrations/${encodeURIComponent(workflowId)}/switchover`);
    const result = await handle.result();
    assert.equal(result.state, 'completed');
    await open(mig.webUiUrl as string, true);
    await seeText(/Completed/, 'ended status');
    await seeText('stage 5 activation on h2: activate on target', 'activation activity summary');
    await shot('4-workflow-page-completed');
  });
});
