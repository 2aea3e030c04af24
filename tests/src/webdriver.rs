//! A real browser for tests: Debian's headless Chromium driven by `chromedriver` over the W3C
//! WebDriver protocol (plain JSON over HTTP on loopback; the few commands the console tests
//! use).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::http::{eventually, send};
use crate::prometheus::free_port;

/// The W3C key of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver`.
pub struct Driver {
    url: String,
    _child: Child,
}

impl Driver {
    /// Starts `chromedriver` on a free port; `None` (saying why on stderr) when it or
    /// `chromium` is not installed.
    ///
    /// # Panics
    /// If it starts but never answers.
    pub async fn start() -> Option<Self> {
        for bin in ["chromedriver", "chromium"] {
            if !Command::new(bin).arg("--version").output().await.is_ok_and(|o| o.status.success()) {
                eprintln!("SKIPPED: {bin} is not installed (apt-get install chromium chromium-driver)");
                return None;
            }
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "chromedriver answers", || async {
            let r = send(Method::GET, &format!("{url}/status"), &[], Bytes::new()).await?;
            if r.status.is_success() { Ok(()) } else { Err(r.status.to_string()) }
        })
        .await
        .expect("chromedriver did not start");
        Some(Self { url, _child: child })
    }

    /// A new headless browser session with a fresh profile in `profile`, `width` × `height`.
    ///
    /// # Panics
    /// If the session cannot be made.
    pub async fn session(&self, profile: &Path, width: u32, height: u32) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let v = call(&self.url, Method::POST, "/session", Some(caps)).await.expect("new session");
        let id = v["sessionId"].as_str().expect("session id").to_owned();
        Browser { base: format!("{}/session/{id}", self.url) }
    }
}

async fn call(base: &str, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let r = send(method, &format!("{base}{path}"), &[("content-type", "application/json")], body).await?;
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{path}: not JSON: {e}"))?;
    if !r.status.is_success() {
        return Err(format!("{path}: {} {}", r.status, v["value"]["message"].as_str().unwrap_or("")));
    }
    Ok(v.get("value").cloned().unwrap_or(v))
}

/// One browser session.
pub struct Browser {
    base: String,
}

/// An element on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        call(&self.base, method, path, body).await
    }

    /// Opens `url`.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url }))).await.map(drop)
    }

    /// The page's URL.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn url(&self) -> Result<String, String> {
        Ok(self.cmd(Method::GET, "/url", None).await?.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS `selector`.
    ///
    /// # Errors
    /// None matches, or the driver's message.
    pub async fn find(&self, selector: &str) -> Result<Element, String> {
        let v = self.cmd(Method::POST, "/element", Some(json!({"using": "css selector", "value": selector}))).await?;
        v[ELEMENT].as_str().map(|id| Element(id.to_owned())).ok_or_else(|| format!("no element {selector}: {v}"))
    }

    /// Every element matching `selector`.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn find_all(&self, selector: &str) -> Result<Vec<Element>, String> {
        let v = self.cmd(Method::POST, "/elements", Some(json!({"using": "css selector", "value": selector}))).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str())
            .map(|s| Element(s.to_owned()))
            .collect())
    }

    /// Clicks `e`.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn click(&self, e: &Element) -> Result<(), String> {
        self.cmd(Method::POST, &format!("/element/{}/click", e.0), Some(json!({}))).await.map(drop)
    }

    /// Types `text` into `e`.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn type_into(&self, e: &Element, text: &str) -> Result<(), String> {
        self.cmd(Method::POST, &format!("/element/{}/value", e.0), Some(json!({ "text": text }))).await.map(drop)
    }

    /// Clears `e` (an input or text area).
    ///
    /// # Errors
    /// The driver's message.
    pub async fn clear(&self, e: &Element) -> Result<(), String> {
        self.cmd(Method::POST, &format!("/element/{}/clear", e.0), Some(json!({}))).await.map(drop)
    }

    /// The rendered text of `e`.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn text(&self, e: &Element) -> Result<String, String> {
        Ok(self
            .cmd(Method::GET, &format!("/element/{}/text", e.0), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The rendered text of the first element matching `selector`.
    ///
    /// # Errors
    /// None matches, or the driver's message.
    pub async fn text_of(&self, selector: &str) -> Result<String, String> {
        let e = self.find(selector).await?;
        self.text(&e).await
    }

    /// Sends keys to whatever has focus (Tab is `\u{e004}`, Enter `\u{e007}`).
    ///
    /// # Errors
    /// The driver's message.
    pub async fn keys(&self, keys: &str) -> Result<(), String> {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [json!({"type": "keyDown", "value": c.to_string()}), json!({"type": "keyUp", "value": c.to_string()})]
            })
            .collect();
        self.cmd(Method::POST, "/actions", Some(json!({"actions": [{"type": "key", "id": "kb", "actions": actions}]})))
            .await
            .map(drop)
    }

    /// Runs `script` in the page and returns its value.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.cmd(Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Accepts the open `confirm()` dialog.
    ///
    /// # Errors
    /// No dialog is open, or the driver's message.
    pub async fn accept_dialog(&self) -> Result<(), String> {
        self.cmd(Method::POST, "/alert/accept", Some(json!({}))).await.map(drop)
    }

    /// Resizes the window.
    ///
    /// # Errors
    /// The driver's message.
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        self.cmd(Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await.map(drop)
    }

    /// A PNG screenshot of the viewport, also written to `path`.
    ///
    /// # Errors
    /// The driver's message, or the file cannot be written.
    pub async fn screenshot(&self, path: &Path) -> Result<Vec<u8>, String> {
        let v = self.cmd(Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, &png).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(png)
    }

    /// Polls `check` until it holds (at most `limit`): for state the page changes by itself.
    ///
    /// # Errors
    /// The last failure when `limit` passes.
    pub async fn wait_for<F, Fut>(&self, limit: Duration, what: &str, check: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        eventually(limit, what, check).await
    }

    /// Ends the session (closes the browser).
    pub async fn quit(self) {
        let _ = self.cmd(Method::DELETE, "", None).await;
    }
}

/// Where screenshots go: `$CARGO_TARGET_DIR/console-screenshots` (or `target/...`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("console-screenshots")
}

/// How many distinct colours a PNG's pixels have (0 when it does not decode): a blank page has
/// one, a page with text and tables many.
pub fn png_colours(png: &[u8]) -> usize {
    let Ok(mut reader) = png::Decoder::new(std::io::Cursor::new(png)).read_info() else { return 0 };
    let Some(size) = reader.output_buffer_size() else { return 0 };
    let mut buf = vec![0u8; size];
    let Ok(info) = reader.next_frame(&mut buf) else { return 0 };
    let step = info.color_type.samples() * usize::from(info.bit_depth as u8).div_ceil(8);
    let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(step.max(1)).collect();
    colours.len()
}
