// Test-only browser driver: runs a JSON script of steps in Debian's headless
// Chromium through playwright-core (which downloads no browser of its own)
// and prints one JSON result line per step. Latchkey's Rust tests start it
// through latchkey_testkit::browser::Browser.
//
// Usage: node drive.mjs [options] < script.json
//   --chromium PATH          the browser (default /usr/bin/chromium, or $LATCHKEY_CHROMIUM)
//   --ignore-https-errors    accept any server certificate
//   --trust-cert FILE        accept certificates whose public key is one of the
//                            certificates in this PEM file (repeatable); name the
//                            server's own certificate, or a CA the server sends
//   --resolve HOST=IP        resolve HOST to IP (repeatable), for host-routed apps
//   --timeout-ms N           default time limit of one step (15000)
//   --text-limit N           characters of visible text per result (4000)
//
// The browser never reaches beyond this machine: every host name other than
// `localhost` and the --resolve ones fails to resolve (IP literals connect),
// so a page that loads web fonts does not hang a test.
//
// The script is a JSON array of steps (or {"steps": [...]}). One browser
// context serves the whole script, so cookies persist from step to step.
// Each step is an object with one action key and optional `timeout_ms` and
// `label`:
//
//   {"goto": URL}                       navigate, wait for the load event
//   {"fill": SELECTOR, "value": TEXT}   type into a field
//   {"click": SELECTOR}                 click; when that navigates, wait for the
//                                       new page's load event
//     "if_present": SELECTOR            ...only when this matches on the page now,
//                                       else the step is skipped ("skipped": true)
//     "navigation": true|false          wait for a navigation (true: must happen;
//                                       false: don't wait; default: 2 s grace)
//   {"expectText": TEXT}                the visible text contains TEXT (waits)
//   {"expectNoText": TEXT}              the visible text does not contain TEXT (now)
//   {"expectUrlPrefix": PREFIX}         the page URL starts with PREFIX (waits)
//   {"waitForUrl": PREFIX}              wait until the URL starts with PREFIX and
//                                       that page has loaded
//   {"expectStatus": N}                 the last main-document response had status N
//   {"cookies": true | URL}             print the context's cookies (all, or those
//                                       sent to URL)
//   {"clearCookies": true}              forget every cookie
//   {"screenshot": PATH}                save a PNG of the page
//   {"evaluate": JS}                    evaluate a JS expression in the page (it
//                                       may be a promise); its JSON value is printed
//   {"content": true}                   print the page's HTML (truncated)
//
// Every result line: {"step": i, "action", "label"?, "ok", "url", "status",
// "title", "text", "error"?, "skipped"?, "cookies"?, "value"?, "html"?}, where
// `status` is the HTTP status of the last main-frame document response (after
// redirects) and `text` the page's visible text, truncated. The first failing
// step ends the script. The last line is {"done": true, "ok": BOOL}. Exit
// status: 0 all steps passed, 1 a step failed, 2 the script or an option is
// wrong or the browser did not start.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

import { chromium } from 'playwright-core';

function fail(message) {
  process.stdout.write(`${JSON.stringify({ done: true, ok: false, error: message })}\n`);
  process.exitCode = 2;
}

function parseArgs(argv) {
  const opts = {
    chromium: process.env.LATCHKEY_CHROMIUM || '/usr/bin/chromium',
    ignoreHttpsErrors: false,
    trustCerts: [],
    resolve: [],
    timeoutMs: 15000,
    textLimit: 4000,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      i += 1;
      if (argv[i] === undefined) throw new Error(`option \`${arg}\` needs a value`);
      return argv[i];
    };
    const number = () => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`\`${arg} ${v}\`: expected a whole number above zero`);
      return n;
    };
    switch (arg) {
      case '--chromium': opts.chromium = value(); break;
      case '--ignore-https-errors': opts.ignoreHttpsErrors = true; break;
      case '--trust-cert': opts.trustCerts.push(value()); break;
      case '--resolve': {
        const v = value();
        const m = /^([A-Za-z0-9.-]+)=([0-9A-Fa-f.:[\]]+)$/.exec(v);
        if (!m) throw new Error(`\`--resolve ${v}\`: expected HOST=IP, e.g. app.test=127.0.0.1`);
        opts.resolve.push([m[1], m[2]]);
        break;
      }
      case '--timeout-ms': opts.timeoutMs = number(); break;
      case '--text-limit': opts.textLimit = number(); break;
      default: throw new Error(`unknown option \`${arg}\`; see the top of drive.mjs`);
    }
  }
  return opts;
}

// Base64 SHA-256 of each certificate's SubjectPublicKeyInfo, the form
// Chromium's --ignore-certificate-errors-spki-list takes.
function spkiHashes(file) {
  const pem = fs.readFileSync(file, 'utf8');
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new Error(`\`${file}\` holds no PEM certificate`);
  return blocks.map((b) => {
    const spki = new crypto.X509Certificate(b).publicKey.export({ type: 'spki', format: 'der' });
    return crypto.createHash('sha256').update(spki).digest('base64');
  });
}

const ACTIONS = [
  'goto', 'fill', 'click', 'expectText', 'expectNoText', 'expectUrlPrefix', 'waitForUrl',
  'expectStatus', 'cookies', 'clearCookies', 'screenshot', 'evaluate', 'content',
];
const MODIFIERS = new Set(['timeout_ms', 'label', 'value', 'if_present', 'navigation']);

function actionOf(step, i) {
  if (step === null || typeof step !== 'object' || Array.isArray(step)) {
    throw new Error(`step ${i} is not an object`);
  }
  const found = Object.keys(step).filter((k) => ACTIONS.includes(k));
  if (found.length !== 1) {
    throw new Error(`step ${i} must have exactly one of ${ACTIONS.join(', ')}; it has ${found.length ? found.join(', ') : 'none'}`);
  }
  for (const k of Object.keys(step)) {
    if (!ACTIONS.includes(k) && !MODIFIERS.has(k)) throw new Error(`step ${i}: unknown key \`${k}\``);
  }
  return found[0];
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function truncate(s, limit) {
  return s.length > limit ? `${s.slice(0, limit)}…` : s;
}

async function main() {
  let opts;
  let steps;
  try {
    opts = parseArgs(process.argv.slice(2));
    const parsed = JSON.parse(await readStdin());
    steps = Array.isArray(parsed) ? parsed : parsed?.steps;
    if (!Array.isArray(steps)) throw new Error('the script must be a JSON array of steps or {"steps": [...]}');
    steps.forEach((s, i) => actionOf(s, i));
  } catch (err) {
    fail(err.message);
    return;
  }

  const rules = [...opts.resolve.map(([h, ip]) => `MAP ${h} ${ip}`), 'MAP * ~NOTFOUND', 'EXCLUDE localhost', 'EXCLUDE *.localhost', 'EXCLUDE 127.0.0.1', 'EXCLUDE [::1]'];
  const args = [`--host-resolver-rules=${rules.join(', ')}`, '--no-proxy-server'];
  if (process.getuid?.() === 0) args.push('--no-sandbox');
  try {
    const spki = opts.trustCerts.flatMap(spkiHashes);
    if (spki.length) args.push(`--ignore-certificate-errors-spki-list=${spki.join(',')}`);
  } catch (err) {
    fail(err.message);
    return;
  }

  let browser;
  try {
    browser = await chromium.launch({ executablePath: opts.chromium, args, timeout: 60000 });
  } catch (err) {
    fail(`chromium did not start (\`${opts.chromium}\`): ${err.message}`);
    return;
  }
  let allOk = true;
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: opts.ignoreHttpsErrors });
    const page = await context.newPage();
    let lastStatus = null;
    page.on('response', (resp) => {
      const req = resp.request();
      if (req.isNavigationRequest() && req.frame() === page.mainFrame()) lastStatus = resp.status();
    });

    const visibleText = async () => {
      try {
        return await page.innerText('body', { timeout: 1000 });
      } catch {
        return '';
      }
    };

    // Waits (up to `timeout`) for `check` to hold, re-reading the page.
    const poll = async (timeout, check) => {
      const until = Date.now() + timeout;
      for (;;) {
        if (await check()) return true;
        if (Date.now() >= until) return false;
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    const clickAndSettle = async (step, timeout) => {
      let navigated = false;
      let wake = () => {};
      const onNav = (frame) => {
        if (frame === page.mainFrame()) {
          navigated = true;
          wake();
        }
      };
      page.on('framenavigated', onNav);
      try {
        await page.click(step.click, { timeout });
        if (step.navigation !== false && !navigated) {
          const grace = step.navigation === true ? timeout : 2000;
          await new Promise((resolve) => {
            wake = resolve;
            setTimeout(resolve, grace);
          });
          if (step.navigation === true && !navigated) {
            throw new Error(`clicking \`${step.click}\` did not navigate within ${grace} ms`);
          }
        }
      } finally {
        page.off('framenavigated', onNav);
      }
      if (navigated) await page.waitForLoadState('load', { timeout });
    };

    for (let i = 0; i < steps.length; i += 1) {
      const step = steps[i];
      const action = actionOf(step, i);
      const timeout = step.timeout_ms ?? opts.timeoutMs;
      const result = { step: i, action };
      if (step.label !== undefined) result.label = step.label;
      try {
        switch (action) {
          case 'goto': {
            const resp = await page.goto(String(step.goto), { waitUntil: 'load', timeout });
            if (resp) lastStatus = resp.status();
            break;
          }
          case 'fill':
            if (typeof step.value !== 'string') throw new Error('`fill` needs a string `value`');
            await page.fill(step.fill, step.value, { timeout });
            break;
          case 'click':
            if (step.if_present !== undefined && (await page.locator(step.if_present).count()) === 0) {
              result.skipped = true;
              break;
            }
            await clickAndSettle(step, timeout);
            break;
          case 'expectText': {
            const want = String(step.expectText);
            if (!(await poll(timeout, async () => (await visibleText()).includes(want)))) {
              throw new Error(`the page does not show \`${want}\``);
            }
            break;
          }
          case 'expectNoText': {
            const unwanted = String(step.expectNoText);
            if ((await visibleText()).includes(unwanted)) throw new Error(`the page shows \`${unwanted}\``);
            break;
          }
          case 'expectUrlPrefix': {
            const prefix = String(step.expectUrlPrefix);
            if (!(await poll(timeout, async () => page.url().startsWith(prefix)))) {
              throw new Error(`the page is at \`${page.url()}\`, not under \`${prefix}\``);
            }
            break;
          }
          case 'waitForUrl': {
            const prefix = String(step.waitForUrl);
            await page.waitForURL((u) => u.href.startsWith(prefix), { timeout, waitUntil: 'load' });
            break;
          }
          case 'expectStatus':
            if (lastStatus !== step.expectStatus) {
              throw new Error(`the last page answered ${lastStatus}, not ${step.expectStatus}`);
            }
            break;
          case 'cookies':
            result.cookies = await context.cookies(typeof step.cookies === 'string' ? step.cookies : undefined);
            break;
          case 'clearCookies':
            await context.clearCookies();
            break;
          case 'screenshot':
            await page.screenshot({ path: String(step.screenshot), fullPage: true, timeout });
            break;
          case 'evaluate':
            result.value = (await page.evaluate(String(step.evaluate))) ?? null;
            break;
          case 'content':
            result.html = truncate(await page.content(), opts.textLimit * 4);
            break;
          default:
            throw new Error(`unknown action ${action}`);
        }
        result.ok = true;
      } catch (err) {
        result.ok = false;
        result.error = String(err?.message ?? err).split('\n')[0];
      }
      result.url = page.url();
      result.status = lastStatus;
      result.title = await page.title().catch(() => '');
      result.text = truncate(await visibleText(), opts.textLimit);
      process.stdout.write(`${JSON.stringify(result)}\n`);
      if (!result.ok) {
        allOk = false;
        break;
      }
    }
  } finally {
    await browser.close().catch(() => {});
  }
  process.stdout.write(`${JSON.stringify({ done: true, ok: allOk })}\n`);
  process.exitCode = allOk ? 0 : 1;
}

await main();
