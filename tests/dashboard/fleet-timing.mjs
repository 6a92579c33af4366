// How long the fleet page takes to show every agent: opens $URL (a `faultctl dashboard` URL)
// in Debian's chromium, waits until $AGENTS rows are on the page, prints the time, then the
// time of the next refresh. Used for the figure in docs/dashboard.md:
//   faultline-sim agents --count 1000 ...; faultctl dashboard ...; URL=... AGENTS=1000 node fleet-timing.mjs
import { chromium } from 'playwright-core';

const url = process.env.URL, n = Number(process.env.AGENTS || 1000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = await browser.newPage();
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=agent-row]').length >= n, n, { timeout: 60000, polling: 20 });
  const first = Date.now() - t0;
  // The page refreshes every 2 s; time one refresh (the rows are rebuilt).
  const refresh = await page.evaluate(async () => {
    const tbody = document.querySelector('[data-testid=agents] tbody');
    return await new Promise((resolve) => {
      let start = 0;
      const obs = new MutationObserver(() => { if (!start) start = performance.now(); });
      obs.observe(document.querySelector('main'), { childList: true, subtree: true });
      const t = performance.now();
      const check = () => {
        const now = document.querySelector('[data-testid=agents] tbody');
        if (now !== tbody) { obs.disconnect(); resolve(performance.now() - t); } else requestAnimationFrame(check);
      };
      check();
    });
  });
  console.log(JSON.stringify({ agents: n, first_render_ms: first, next_refresh_after_ms: Math.round(refresh) }));
} finally {
  await browser.close();
}
