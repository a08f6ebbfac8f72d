//! A real OpenID Provider for tests (`oidc-provider` from npm, a certified Node.js
//! implementation, run from `gateway/tests/oidc/provider.mjs`), and a scripted browser:
//! an HTTP client that follows redirects one at a time, keeps cookies the way a
//! browser does for one host, and submits the provider's login, consent and logout
//! forms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::ports::free_addr;
use crate::process::Proc;

/// `gateway/tests/oidc`: the provider script and its npm packages.
fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/oidc")
}

/// `npm ci` once per process when the packages are missing (`.ci/test` runs it first;
/// this is for a test run by hand).
fn ensure_packages() -> anyhow::Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = provider_dir();
    if *done || dir.join("node_modules/oidc-provider").exists() {
        *done = true;
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .context("running npm (Node.js and npm are needed for the OpenID Provider)")?;
    if !out.status.success() {
        bail!(
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
    Ok(())
}

pub struct OpenIdProvider {
    pub addr: SocketAddr,
    proc: Proc,
}

impl OpenIdProvider {
    /// Start the provider with client `gateway` / `gateway-secret` allowed to redirect
    /// to `redirect_uris` and, after logout, to `post_logout_uris`; access and ID
    /// tokens live `token_ttl`.
    pub async fn spawn(
        redirect_uris: &[String],
        post_logout_uris: &[String],
        token_ttl: Duration,
    ) -> anyhow::Result<Self> {
        ensure_packages()?;
        let addr = free_addr("127.0.0.1");
        let mut cmd = Command::new("node");
        cmd.arg("provider.mjs")
            .current_dir(provider_dir())
            .env("PORT", addr.port().to_string())
            .env("REDIRECT_URIS", redirect_uris.join(","))
            .env("POST_LOGOUT_URIS", post_logout_uris.join(","))
            .env("TOKEN_TTL", token_ttl.as_secs().max(1).to_string());
        let mut proc = Proc::spawn(cmd, "openid-provider")?;
        let url = format!("http://{addr}/.well-known/openid-configuration");
        let client = crate::poll::test_client();
        for _ in 0..200 {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(Self { addr, proc });
                }
            }
            if !proc.is_running() {
                bail!("the OpenID Provider exited:\n{}", proc.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the OpenID Provider did not start:\n{}", proc.log())
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// A JWT access token for `https://api.test` (client credentials grant).
    pub async fn api_token(&self, scope: &str) -> anyhow::Result<String> {
        let r = crate::poll::test_client()
            .post(format!("{}/token", self.issuer()))
            .basic_auth("gateway", Some("gateway-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource=https%3A%2F%2Fapi.test&scope={scope}"
            ))
            .send()
            .await?;
        let v: serde_json::Value = r.json().await?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no access_token: {v}"))
    }
}

/// One answer the browser got.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// A browser for one host (every test server is on 127.0.0.1): cookies by name, as a
/// browser keeps them for a host whatever the port, `Max-Age=0` deleting.
pub struct Browser {
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// Every answer, in order.
    pub history: Vec<Page>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            cookies: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.trim().split_once('=')) else {
            return;
        };
        let gone = value.is_empty()
            || parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")
            });
        if gone {
            self.cookies.remove(name);
        } else {
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Page> {
        let mut req = req;
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("requesting {url}"))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| absolute(url, l));
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for c in &set_cookies {
            self.keep(c);
        }
        let body = resp.text().await.unwrap_or_default();
        let page = Page {
            url: url.to_owned(),
            status,
            location,
            set_cookies,
            body,
        };
        self.history.push(page.clone());
        Ok(page)
    }

    pub async fn get(&mut self, url: &str) -> anyhow::Result<Page> {
        self.get_with(url, &[]).await
    }

    /// GET with extra request headers.
    pub async fn get_with(&mut self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Page> {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req, url).await
    }

    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> anyhow::Result<Page> {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, url).await
    }

    /// GET `url` and follow redirects (at most 10); the last answer.
    pub async fn follow(&mut self, url: &str) -> anyhow::Result<Page> {
        let mut page = self.get(url).await?;
        for _ in 0..10 {
            match (&page.location, page.status) {
                (Some(next), 301..=303 | 307 | 308) => {
                    let next = next.clone();
                    page = self.get(&next).await?;
                }
                _ => return Ok(page),
            }
        }
        bail!("more than 10 redirects from {url}")
    }

    /// Submit the page's first form (its action, method POST, its hidden inputs plus
    /// `fields`), then follow redirects.
    pub async fn submit(&mut self, page: &Page, fields: &[(&str, &str)]) -> anyhow::Result<Page> {
        let action = attr_after(&page.body, "<form", "action")
            .with_context(|| format!("no form on {}:\n{}", page.url, page.body))?;
        let action = absolute(&page.url, &action.replace("&amp;", "&"));
        let mut all: Vec<(String, String)> = hidden_inputs(&page.body);
        all.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut next = self.post_form(&action, &pairs).await?;
        for _ in 0..10 {
            match (&next.location, next.status) {
                (Some(l), 301..=303 | 307 | 308) => {
                    let l = l.clone();
                    next = self.get(&l).await?;
                }
                _ => break,
            }
        }
        Ok(next)
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `location` made absolute against `base` (`/path` keeps the base's origin).
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

/// The value of attribute `attr` in the first tag starting with `tag`.
fn attr_after(html: &str, tag: &str, attr: &str) -> Option<String> {
    let start = html.find(tag)?;
    let end = start + html[start..].find('>')?;
    attr_in(&html[start..end], attr)
}

fn attr_in(tag: &str, attr: &str) -> Option<String> {
    let key = format!("{attr}=\"");
    let at = tag.find(&key)? + key.len();
    let len = tag[at..].find('"')?;
    Some(tag[at..at + len].to_owned())
}

/// `name=value` of every `<input type="hidden">`.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            (attr_in(tag, "type").as_deref() == Some("hidden"))
                .then(|| {
                    Some((
                        attr_in(tag, "name")?,
                        attr_in(tag, "value").unwrap_or_default(),
                    ))
                })
                .flatten()
        })
        .collect()
}
