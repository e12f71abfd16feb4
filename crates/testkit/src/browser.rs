//! Real headless Chromium for tests of browser sign-in: Debian's
//! `/usr/bin/chromium`, driven by `testing/browser/drive.mjs` through
//! playwright-core (an npm package that drives an installed browser and
//! downloads none).
//!
//! A test builds a script of [`Step`]s and hands it to [`Browser::run`]; one
//! browser context serves the whole script, so cookies persist from step to
//! step, and every step answers a [`StepResult`] (URL, status, title, the
//! page's visible text, cookies when asked). [`sign_in_steps`],
//! [`device_steps`] and [`logout_steps`] hold the selectors of the pages of
//! the test OIDC provider (`testing/oidc`, oidc-provider's built-in login,
//! consent, device and logout pages), so tests do not repeat them.
//!
//! The browser never leaves this machine: host names other than
//! `localhost` and those given to [`Browser::resolve`] do not resolve.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

use crate::{repo_root, skip_or_fail};

/// The peer name of Chromium in `LATCHKEY_REQUIRE_PEERS`.
pub const PEER: &str = "chromium";

/// Overrides the browser binary (default `/usr/bin/chromium`).
pub const CHROMIUM_ENV: &str = "LATCHKEY_CHROMIUM";

/// `testing/browser`: the Node.js driver and its `node_modules`.
pub fn driver_dir() -> PathBuf {
    repo_root().join("testing").join("browser")
}

/// The browser the driver runs: `$LATCHKEY_CHROMIUM` or `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os(CHROMIUM_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// One step of a browser script: a JSON object with one action (the format
/// `testing/browser/drive.mjs` documents at its top). Build them with the
/// constructors; [`Step::raw`] takes any object the driver understands.
#[derive(Debug, Clone, PartialEq)]
pub struct Step(Value);

impl Step {
    /// Any step object, e.g. `json!({"goto": url})`.
    pub fn raw(step: Value) -> Step {
        Step(step)
    }

    /// Navigates to `url` and waits for the page's load event.
    pub fn goto(url: &str) -> Step {
        Step(json!({ "goto": url }))
    }

    /// Types `value` into the field `selector` matches (waits for it).
    pub fn fill(selector: &str, value: &str) -> Step {
        Step(json!({ "fill": selector, "value": value }))
    }

    /// Clicks `selector`; when that navigates (within a 2 s grace), waits
    /// for the new page to load.
    pub fn click(selector: &str) -> Step {
        Step(json!({ "click": selector }))
    }

    /// Clicks `selector` only when `probe` matches on the page now (else the
    /// step is skipped): for a page that appears only sometimes, such as a
    /// consent page.
    pub fn click_if_present(probe: &str, selector: &str) -> Step {
        Step(json!({ "click": selector, "if_present": probe }))
    }

    /// Clicks `selector` without waiting for any navigation.
    pub fn click_no_wait(selector: &str) -> Step {
        Step(json!({ "click": selector, "navigation": false }))
    }

    /// Waits until the page's visible text contains `text`.
    pub fn expect_text(text: &str) -> Step {
        Step(json!({ "expectText": text }))
    }

    /// Checks that the page's visible text does not contain `text`.
    pub fn expect_no_text(text: &str) -> Step {
        Step(json!({ "expectNoText": text }))
    }

    /// Waits until the page's URL starts with `prefix`.
    pub fn expect_url_prefix(prefix: &str) -> Step {
        Step(json!({ "expectUrlPrefix": prefix }))
    }

    /// Waits until the URL starts with `prefix` and that page has loaded.
    pub fn wait_for_url(prefix: &str) -> Step {
        Step(json!({ "waitForUrl": prefix }))
    }

    /// Checks the HTTP status of the last main-document response (after
    /// redirects).
    pub fn expect_status(status: u16) -> Step {
        Step(json!({ "expectStatus": status }))
    }

    /// Reports every cookie of the browser context ([`StepResult::cookies`]).
    pub fn cookies() -> Step {
        Step(json!({ "cookies": true }))
    }

    /// Reports the cookies the browser would send to `url`.
    pub fn cookies_for(url: &str) -> Step {
        Step(json!({ "cookies": url }))
    }

    /// Forgets every cookie.
    pub fn clear_cookies() -> Step {
        Step(json!({ "clearCookies": true }))
    }

    /// Saves a PNG of the page to `path`.
    pub fn screenshot(path: &Path) -> Step {
        Step(json!({ "screenshot": path.to_string_lossy() }))
    }

    /// Evaluates a JavaScript expression in the page (a promise is awaited);
    /// its JSON value lands in [`StepResult::value`]. For requests a page
    /// makes itself, e.g. a cross-origin `fetch(..., {method: 'POST'})`.
    pub fn evaluate(js: &str) -> Step {
        Step(json!({ "evaluate": js }))
    }

    /// Reports the page's HTML ([`StepResult::html`], truncated).
    pub fn content() -> Step {
        Step(json!({ "content": true }))
    }

    /// This step's own time limit (the default is [`Browser::step_timeout`]).
    pub fn timeout(mut self, limit: Duration) -> Step {
        self.0["timeout_ms"] = json!(limit.as_millis().max(1) as u64);
        self
    }

    /// A name that comes back in [`StepResult::label`] and in failure reports.
    pub fn label(mut self, label: &str) -> Step {
        self.0["label"] = json!(label);
        self
    }

    /// The step as the driver reads it.
    pub fn json(&self) -> &Value {
        &self.0
    }
}

/// The steps that sign in as `user` on the test provider's login page (the
/// page must be showing or on its way, e.g. after a [`Step::goto`] of an app
/// that redirects there), then accept the consent page when the provider
/// shows one. oidc-provider's built-in form takes any login and password;
/// the login becomes the `sub`.
pub fn sign_in_steps(user: &str) -> Vec<Step> {
    vec![
        Step::fill(selectors::LOGIN, user).label("login name"),
        Step::fill(selectors::PASSWORD, "any password").label("password"),
        Step::click(selectors::SUBMIT).label("sign in"),
        consent_step(),
    ]
}

/// Signing in in one go: open `start_url` (an app, or Latchkey's `/login`,
/// that redirects to the test provider), sign in as `user`, consent if
/// asked, and wait until the browser is back at a URL starting with
/// `landing_prefix`. Add checks after it, e.g.
/// `browser.run(&[sign_in_at(&app, "maria", &app), vec![Step::expect_text("maria")]].concat())`.
pub fn sign_in_at(start_url: &str, user: &str, landing_prefix: &str) -> Vec<Step> {
    let mut steps = vec![Step::goto(start_url).label("start sign-in")];
    steps.extend(sign_in_steps(user));
    steps.push(Step::wait_for_url(landing_prefix).label("back at the app"));
    steps
}

/// Accepts the provider's consent page if it shows.
pub fn consent_step() -> Step {
    Step::click_if_present(selectors::CONSENT_PROBE, selectors::SUBMIT).label("consent")
}

/// The steps that approve a device authorization in the browser: open the
/// provider's verification page (`verification_uri` from the device
/// authorization answer), enter `user_code`, confirm, sign in as `user`,
/// consent, and wait for the success page.
pub fn device_steps(verification_uri: &str, user_code: &str, user: &str) -> Vec<Step> {
    let mut steps = vec![
        Step::goto(verification_uri).label("verification page"),
        Step::fill(selectors::USER_CODE, user_code).label("user code"),
        Step::click(selectors::USER_CODE_SUBMIT).label("submit user code"),
        Step::click(selectors::DEVICE_CONFIRM).label("confirm device"),
    ];
    steps.extend(sign_in_steps(user));
    steps.push(Step::expect_text(selectors::DEVICE_SUCCESS_TEXT).label("device approved"));
    steps
}

/// Confirms the provider's RP-initiated logout page (its
/// `end_session_endpoint` asks "Do you want to sign-out…?").
pub fn logout_steps() -> Vec<Step> {
    vec![
        Step::expect_text(selectors::LOGOUT_QUESTION_TEXT).label("logout page"),
        Step::click(selectors::LOGOUT_YES).label("yes, sign me out"),
    ]
}

/// The selectors and texts of the test provider's pages (oidc-provider
/// 9's built-in pages, pinned in testing/oidc/package-lock.json).
pub mod selectors {
    /// The login name field of the sign-in page.
    pub const LOGIN: &str = "input[name=login]";
    /// The password field of the sign-in page.
    pub const PASSWORD: &str = "input[name=password]";
    /// The submit button of the sign-in and the consent page.
    pub const SUBMIT: &str = "button[type=submit]";
    /// Present only on the consent page.
    pub const CONSENT_PROBE: &str = "input[name=prompt][value=consent]";
    /// The text of the sign-in page's button.
    pub const SIGN_IN_TEXT: &str = "Sign-in";
    /// The user code field of the device verification page.
    pub const USER_CODE: &str = "input[name=user_code]";
    /// The button that submits the user code.
    pub const USER_CODE_SUBMIT: &str = "button[type=submit][form='op.deviceInputForm']";
    /// The button that confirms the device ("Continue").
    pub const DEVICE_CONFIRM: &str = "button[autofocus][form='op.deviceConfirmForm']";
    /// The heading of the page shown once a device is approved.
    pub const DEVICE_SUCCESS_TEXT: &str = "Sign-in Success";
    /// The question of the logout page.
    pub const LOGOUT_QUESTION_TEXT: &str = "Do you want to sign-out";
    /// "Yes, sign me out" on the logout page.
    pub const LOGOUT_YES: &str = "button[name=logout][value=yes]";
    /// The heading of the provider's own page after a logout without a
    /// `post_logout_redirect_uri`.
    pub const LOGOUT_SUCCESS_TEXT: &str = "Sign-out Success";
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The domain it belongs to.
    pub domain: String,
    /// Its path.
    pub path: String,
    /// Seconds since the epoch, or -1 for a session cookie.
    pub expires: f64,
    /// Hidden from page scripts.
    pub http_only: bool,
    /// Sent over HTTPS only.
    pub secure: bool,
    /// `Strict`, `Lax` or `None`.
    pub same_site: String,
}

impl Cookie {
    fn from_json(v: &Value) -> Cookie {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Cookie {
            name: s("name"),
            value: s("value"),
            domain: s("domain"),
            path: s("path"),
            expires: v["expires"].as_f64().unwrap_or(-1.0),
            http_only: v["httpOnly"].as_bool().unwrap_or(false),
            secure: v["secure"].as_bool().unwrap_or(false),
            same_site: s("sameSite"),
        }
    }
}

/// What one step saw (one JSON line of the driver).
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The step's index in the script.
    pub index: usize,
    /// Its action (`goto`, `click`, ...).
    pub action: String,
    /// Its [`Step::label`].
    pub label: Option<String>,
    /// Whether it passed.
    pub ok: bool,
    /// A [`Step::click_if_present`] whose probe did not match.
    pub skipped: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// The page's URL after the step.
    pub url: String,
    /// The HTTP status of the last main-document response, if any.
    pub status: Option<u16>,
    /// The page's title.
    pub title: String,
    /// The page's visible text (truncated).
    pub text: String,
    /// Cookies, for [`Step::cookies`] and [`Step::cookies_for`].
    pub cookies: Vec<Cookie>,
    /// The value of a [`Step::evaluate`].
    pub value: Option<Value>,
    /// The HTML of a [`Step::content`].
    pub html: Option<String>,
    /// The whole line.
    pub raw: Value,
}

impl StepResult {
    fn from_json(v: Value) -> StepResult {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        StepResult {
            index: v["step"].as_u64().unwrap_or_default() as usize,
            action: s("action"),
            label: v["label"].as_str().map(str::to_owned),
            ok: v["ok"].as_bool().unwrap_or(false),
            skipped: v["skipped"].as_bool().unwrap_or(false),
            error: v["error"].as_str().map(str::to_owned),
            url: s("url"),
            status: v["status"].as_u64().and_then(|n| u16::try_from(n).ok()),
            title: s("title"),
            text: s("text"),
            cookies: v["cookies"]
                .as_array()
                .map(|a| a.iter().map(Cookie::from_json).collect())
                .unwrap_or_default(),
            value: v.get("value").cloned(),
            html: v["html"].as_str().map(str::to_owned),
            raw: v,
        }
    }

    /// The cookie called `name` in this step's [`StepResult::cookies`].
    pub fn cookie(&self, name: &str) -> Option<&Cookie> {
        self.cookies.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.label.as_deref().unwrap_or(&self.action);
        let verdict = match (&self.error, self.skipped) {
            (Some(e), _) => format!("FAILED: {e}"),
            (None, true) => "skipped".to_owned(),
            (None, false) => "ok".to_owned(),
        };
        let status = self.status.map(|s| s.to_string()).unwrap_or("-".into());
        write!(
            f,
            "step {} ({name}): {verdict}\n  at {} [{status}] `{}`\n  text: {}",
            self.index,
            self.url,
            self.title,
            self.text.replace('\n', " | ")
        )
    }
}

/// A browser script that did not run to its end.
#[derive(Debug)]
pub struct BrowserRunError {
    /// What went wrong.
    pub reason: String,
    /// The steps that ran, the failing one last.
    pub results: Vec<StepResult>,
    /// What the driver printed on stderr.
    pub stderr: String,
}

impl fmt::Display for BrowserRunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the browser script failed: {}", self.reason)?;
        for r in &self.results {
            writeln!(f, "{r}")?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "driver stderr:\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for BrowserRunError {}

/// Headless Chromium, ready to run scripts. Each [`Browser::run`] starts a
/// fresh browser (no cookies from an earlier run) and closes it at the end.
#[derive(Debug, Clone)]
pub struct Browser {
    chromium: PathBuf,
    ignore_https_errors: bool,
    trust_certs: Vec<PathBuf>,
    resolve: Vec<(String, String)>,
    step_timeout: Duration,
    run_timeout: Duration,
}

impl Browser {
    /// The browser, with the driver's npm packages installed (`npm ci` in
    /// `testing/browser` unless its stamp is current, under a lock shared by
    /// parallel tests); `None` after [`skip_or_fail`] when Chromium, Node.js
    /// or the packages are missing. Blocking (it may run npm).
    pub fn available() -> Option<Browser> {
        let chromium = chromium_path();
        if !chromium.is_file() {
            skip_or_fail(
                PEER,
                &format!(
                    "no Chromium at `{}` (install Debian's `chromium`, or set {CHROMIUM_ENV})",
                    chromium.display()
                ),
            );
            return None;
        }
        if let Err(why) = ensure_driver_installed() {
            skip_or_fail(PEER, &why);
            return None;
        }
        Some(Browser {
            chromium,
            ignore_https_errors: false,
            trust_certs: Vec::new(),
            resolve: Vec::new(),
            step_timeout: Duration::from_secs(15),
            run_timeout: Duration::from_secs(180),
        })
    }

    /// Accept any HTTPS certificate.
    pub fn ignore_https_errors(mut self) -> Browser {
        self.ignore_https_errors = true;
        self
    }

    /// Accept servers whose certificate chain holds a certificate with the
    /// public key of a certificate in this PEM file (the server's own
    /// certificate, or a CA it sends along).
    pub fn trust_cert(mut self, pem: &Path) -> Browser {
        self.trust_certs.push(pem.to_path_buf());
        self
    }

    /// Resolve `host` to `ip` (e.g. `app.test` to `127.0.0.1`), for apps
    /// routed by host name.
    pub fn resolve(mut self, host: &str, ip: &str) -> Browser {
        self.resolve.push((host.to_owned(), ip.to_owned()));
        self
    }

    /// The time limit of a step without its own [`Step::timeout`] (15 s).
    pub fn step_timeout(mut self, limit: Duration) -> Browser {
        self.step_timeout = limit;
        self
    }

    /// The time limit of a whole script (180 s).
    pub fn run_timeout(mut self, limit: Duration) -> Browser {
        self.run_timeout = limit;
        self
    }

    /// Runs `steps` and returns every step's result; panics, listing what
    /// each step saw, when one fails.
    pub async fn run(&self, steps: &[Step]) -> Vec<StepResult> {
        match self.try_run(steps).await {
            Ok(results) => results,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `steps`; the error holds the results up to the failing step.
    pub async fn try_run(&self, steps: &[Step]) -> Result<Vec<StepResult>, BrowserRunError> {
        let mut cmd = Command::new("node");
        cmd.arg("drive.mjs")
            .arg("--chromium")
            .arg(&self.chromium)
            .arg("--timeout-ms")
            .arg(self.step_timeout.as_millis().max(1).to_string());
        if self.ignore_https_errors {
            cmd.arg("--ignore-https-errors");
        }
        for pem in &self.trust_certs {
            cmd.arg("--trust-cert").arg(pem);
        }
        for (host, ip) in &self.resolve {
            cmd.arg("--resolve").arg(format!("{host}={ip}"));
        }
        let fail = |reason: String, results: Vec<StepResult>, stderr: String| BrowserRunError {
            reason,
            results,
            stderr,
        };
        let mut child = cmd
            .current_dir(driver_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                fail(
                    format!("could not run `node` ({e}); install Node.js 20 or later"),
                    Vec::new(),
                    String::new(),
                )
            })?;
        let script = Value::Array(steps.iter().map(|s| s.0.clone()).collect()).to_string();
        let mut stdin = child.stdin.take().expect("child stdin is piped");
        let stdout = child.stdout.take().expect("child stdout is piped");
        let mut stderr = child.stderr.take().expect("child stderr is piped");
        let stderr_task = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(script.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });

        let mut results = Vec::new();
        let mut done: Option<Value> = None;
        let mut lines = BufReader::new(stdout).lines();
        let read = tokio::time::timeout(self.run_timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["done"] == json!(true) {
                    done = Some(v);
                } else {
                    results.push(StepResult::from_json(v));
                }
            }
        })
        .await;
        let _ = writer.await;
        if read.is_err() {
            let _ = child.start_kill();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        let _ = child.start_kill();
        let stderr = tokio::time::timeout(Duration::from_secs(5), stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if read.is_err() {
            let reason = format!("it did not finish within {:?}", self.run_timeout);
            return Err(fail(reason, results, stderr));
        }
        match done {
            Some(d) if d["ok"] == json!(true) && results.len() == steps.len() => Ok(results),
            Some(d) => {
                let reason = match (d["error"].as_str(), results.last()) {
                    (Some(e), _) => e.to_owned(),
                    (None, Some(last)) if !last.ok => {
                        last.error.clone().unwrap_or_else(|| "a step failed".into())
                    }
                    _ => format!("{} of {} steps ran", results.len(), steps.len()),
                };
                Err(fail(reason, results, stderr))
            }
            None => Err(fail(
                "the driver stopped without its closing line".into(),
                results,
                stderr,
            )),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stamp `npm ci` leaves in `testing/browser/node_modules` (the SHA-256
/// of the lock file it installed); scripts/test writes the same one.
const STAMP: &str = ".latchkey-package-lock.sha256";

/// Runs `npm ci` in `testing/browser` unless the stamp matches the lock
/// file, under a lock file shared by parallel test processes.
fn ensure_driver_installed() -> Result<(), String> {
    let dir = driver_dir();
    let lock_file = dir.join("package-lock.json");
    let bytes = std::fs::read(&lock_file)
        .map_err(|e| format!("cannot read `{}`: {e}", lock_file.display()))?;
    let want = sha256_hex(&bytes);
    let stamp = dir.join("node_modules").join(STAMP);
    let current = || std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want);
    if current() {
        return Ok(());
    }
    let lock_path = dir.join(".install.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open `{}`: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock `{}`: {e}", lock_path.display()))?;
    let result = if current() {
        Ok(())
    } else {
        npm_ci(&dir).and_then(|()| {
            std::fs::write(&stamp, format!("{want}\n"))
                .map_err(|e| format!("cannot write `{}`: {e}", stamp.display()))
        })
    };
    let _ = lock.unlock();
    result
}

fn npm_ci(dir: &Path) -> Result<(), String> {
    let out = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        // playwright-core drives the installed Chromium; it must fetch none.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!("could not run `npm` ({e}); the browser tests need Node.js 20+ and npm")
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`npm ci` in `{}` failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
