// Drives Debian's chromium with playwright-core against two running `faultctl dashboard`s (an
// operator's and a viewer's); tests/tests/dashboard.rs starts everything and checks the
// coordinator and the agents afterwards. Prints one JSON line per step; exits non-zero with the
// reason on the first failed check. Screenshots go to $SHOTS.
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const OPERATOR_URL = env('OPERATOR_URL');
const VIEWER_URL = env('VIEWER_URL');
const SHOTS = env('SHOTS');
const AGENTS = env('AGENTS').split(',');
const EXPERIMENT = env('EXPERIMENT');

const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));
const check = (cond, why) => { if (!cond) throw new Error(why); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync'],
});
try {
  // ---- The operator's dashboard ----
  const op = await browser.newPage();
  const errors = [];
  op.on('pageerror', (e) => errors.push(String(e)));
  let t0 = Date.now();
  const consoleLines = [];
  op.on('console', (m) => consoleLines.push(m.text()));
  await op.goto(OPERATOR_URL);
  try {
    await op.waitForSelector('[data-testid=agent-row]');
  } catch (e) {
    throw new Error(`the fleet page shows no agent: ${await op.locator('main').textContent()}; ` +
      `console: ${consoleLines.join(' | ')}; page errors: ${errors.join(' | ')}; url ${op.url()}`);
  }
  for (const a of AGENTS) await op.waitForSelector(`[data-testid=agent-row][data-agent="${a}"]`);
  const rows = await op.locator('[data-testid=agent-row]').count();
  check(rows === AGENTS.length, `fleet page lists ${rows} agents, expected ${AGENTS.length}`);
  check(!op.url().includes('token='), `the token stayed in the URL: ${op.url()}`);
  step('fleet', { agents: rows, ms: Date.now() - t0 });
  await op.screenshot({ path: `${SHOTS}/fleet.png`, fullPage: true });

  // A malformed document: the field error is shown in place.
  await op.goto(new URL('/#/create', OPERATOR_URL).toString());
  await op.waitForSelector('[data-testid=document]');
  const bad = `apiVersion: faultline.dev/v1
kind: Experiment
metadata: {name: ${EXPERIMENT}-bad}
spec:
  duration: 1m
  targets: {agents: {labels: {}}, mode: all}
  faults:
    - {kind: cpu, load: 500, workers: 1}
`;
  await op.fill('[data-testid=document]', bad);
  await op.click('[data-testid=dry-run]');
  const err = await op.waitForSelector('[data-testid=create-result] [data-testid=error]');
  const errText = await err.textContent();
  check(/faults\[0\]\.load/.test(errText), `the field error does not name the field: ${errText}`);
  step('malformed', { error: errText });
  await op.screenshot({ path: `${SHOTS}/create-error.png`, fullPage: true });

  // Dry run, then create and start.
  const good = `apiVersion: faultline.dev/v1
kind: Experiment
metadata: {name: ${EXPERIMENT}}
spec:
  duration: 5m
  targets: {agents: {labels: {}}, mode: all}
  faults:
    - {kind: cpu, load: 20, workers: 1}
  guardInterval: 1s
  guards:
    - {name: load, telemetry: {metric: load1, above: 100000, for: 0s}}
`;
  await op.fill('[data-testid=document]', good);
  await op.click('[data-testid=dry-run]');
  await op.waitForSelector('[data-testid=create-result] [data-testid=selected-row]');
  const planned = await op.locator('[data-testid=create-result] [data-testid=selected-row]').count();
  check(planned === AGENTS.length, `the dry run selects ${planned} targets`);
  step('dry-run', { selected: planned });
  await op.click('[data-testid=create-start]');
  await op.waitForURL(/#\/experiment\//);
  // Live guard values arrive through the Watch stream.
  await op.waitForFunction(() => {
    const v = document.querySelector('[data-testid=guard-value]');
    return v && v.textContent.trim() !== '-' && v.textContent.trim() !== '';
  }, null, { timeout: 20000 });
  await op.waitForFunction((n) => document.querySelectorAll('[data-testid=target-state].state-applied').length === n, AGENTS.length, { timeout: 20000 });
  const value = await op.locator('[data-testid=guard-value]').first().textContent();
  await op.waitForSelector('[data-testid=guard-chart] svg');
  step('live', { guard_value: value });
  await op.screenshot({ path: `${SHOTS}/experiment.png`, fullPage: true });

  // Abort from the UI.
  op.on('dialog', (d) => d.accept());
  t0 = Date.now();
  await op.click('[data-testid=abort]');
  await op.waitForFunction(() => document.querySelector('[data-testid=phase]')?.textContent === 'aborted', null, { timeout: 10000 });
  await op.waitForFunction((n) => document.querySelectorAll('[data-testid=target-state].state-reverted').length === n, AGENTS.length, { timeout: 10000 });
  step('abort', { ms_until_page_showed_reverted: Date.now() - t0 });
  await op.screenshot({ path: `${SHOTS}/experiment-aborted.png`, fullPage: true });

  await op.goto(new URL(`/#/report/${EXPERIMENT}`, OPERATOR_URL).toString());
  await op.waitForSelector('[data-testid=report-markdown]');
  await op.screenshot({ path: `${SHOTS}/report.png`, fullPage: true });
  await op.goto(new URL('/#/experiments?phase=aborted', OPERATOR_URL).toString());
  await op.waitForSelector('[data-testid=experiment-row]');
  const listed = await op.locator('[data-testid=experiment-row]').count();
  check(listed === 1, `the aborted filter lists ${listed} experiments`);
  await op.screenshot({ path: `${SHOTS}/experiments.png`, fullPage: true });
  await op.goto(new URL('/#/experiments?phase=running', OPERATOR_URL).toString());
  await op.waitForSelector('main table td.muted');
  check(await op.locator('[data-testid=experiment-row]').count() === 0, 'the running filter lists an ended experiment');
  for (const page of ['audit', 'policy']) {
    await op.goto(new URL(`/#/${page}`, OPERATOR_URL).toString());
    await op.waitForSelector('main table, main dl');
    await op.screenshot({ path: `${SHOTS}/${page}.png`, fullPage: true });
  }
  step('pages', { aborted_listed: listed });

  // Schedules and workflows: the suspended schedule is listed; the workflow waits for the
  // approval given here, then finishes.
  await op.goto(new URL('/#/schedules', OPERATOR_URL).toString());
  await op.waitForSelector('[data-testid=schedule-row]');
  check((await op.locator('[data-testid=schedule-row]').textContent()).includes('suspended'), 'the schedule is not shown suspended');
  await op.screenshot({ path: `${SHOTS}/schedules.png`, fullPage: true });
  await op.goto(new URL('/#/workflow/ui-flow', OPERATOR_URL).toString());
  await op.waitForSelector('[data-testid=step-row] button.primary');
  await op.screenshot({ path: `${SHOTS}/workflow-approval.png`, fullPage: true });
  await op.click('[data-testid=step-row] button.primary');
  await op.waitForFunction(() => document.querySelector('[data-testid=phase]')?.textContent === 'succeeded', null, { timeout: 15000 });
  step('workflow', { approved: true });
  check(errors.length === 0, `page errors: ${errors.join('; ')}`);

  // ---- The viewer's dashboard ----
  const vw = await browser.newPage();
  await vw.goto(VIEWER_URL);
  await vw.waitForSelector('[data-testid=agent-row]');
  await vw.goto(new URL(`/#/experiment/${EXPERIMENT}`, VIEWER_URL).toString());
  await vw.waitForSelector('[data-testid=phase]');
  check(await vw.locator('[data-testid=abort], [data-testid=start], [data-testid=halt], [data-testid=resume]').count() === 0,
    'the viewer sees a control it may not use');
  check(await vw.locator('nav a[data-nav=create]').isHidden(), 'the viewer sees Create');
  // A forged request from the viewer's own page (token and origin right): the coordinator
  // refuses it, and the page shows its words.
  const forged = await vw.evaluate(async (name) => {
    const token = sessionStorage.getItem('faultline-token');
    const r = await fetch(`/api/experiments/${name}/abort`, {
      method: 'POST', headers: { 'X-Faultline-Token': token, 'Content-Type': 'application/json' }, body: '{}',
    });
    return { status: r.status, body: await r.json() };
  }, EXPERIMENT);
  check(forged.status === 403, `forged abort answered ${forged.status}: ${JSON.stringify(forged.body)}`);
  check(/viewer/i.test(forged.body.error || ''), `the refusal does not name the viewer: ${forged.body.error}`);
  step('viewer', { forged_status: forged.status, message: forged.body.error });
  await vw.screenshot({ path: `${SHOTS}/viewer-experiment.png`, fullPage: true });
} finally {
  await browser.close();
}
step('done');
