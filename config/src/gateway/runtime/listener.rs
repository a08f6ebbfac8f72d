//! Listeners: where the gateway accepts traffic, with TLS termination, client
//! certificates, HTTPS redirects and trusted proxies, and their validation.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::HeaderName;

use crate::common::{parse_socket_addr, resolve_path};
use crate::error::Problems;
use crate::gateway::file::{ClientAuthMode, ListenerFile, ListenerTlsFile, TlsVersion};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub h2c: bool,
    pub tls: Option<ListenerTls>,
    /// Redirect every request to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub desync_mitigation: crate::gateway::file::DesyncMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certificates: Vec<CertPaths>,
    pub default_certificate: Option<String>,
    pub min_tls13: bool,
    pub http2: bool,
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub required: bool,
    pub ca: PathBuf,
    pub identity_header: HeaderName,
}

/// Check every listener: names and addresses unique, TLS blocks, trusted proxies.
/// Listeners whose address parses are returned even when another field is wrong, so
/// later checks (the admin address) still see every address in use.
pub(super) fn validate_listeners(
    files: &[ListenerFile],
    base_dir: &Path,
    p: &mut Problems,
) -> Vec<Listener> {
    if files.is_empty() {
        p.push("listeners", "at least one listener is required");
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in files.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(l.name.as_str()) {
            p.push(
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        let address = match parse_socket_addr(&l.address) {
            Ok(a) => a,
            Err(e) => {
                p.push(format!("{at}.address"), e.to_string());
                continue;
            }
        };
        if !addrs.insert(address) {
            p.push(
                format!("{at}.address"),
                format!("address {address} is used twice"),
            );
        }
        let tls = l
            .tls
            .as_ref()
            .map(|t| validate_listener_tls(&at, t, base_dir, p));
        if l.redirect_https && tls.is_some() {
            p.push(
                format!("{at}.redirect_https"),
                "is for plain HTTP listeners",
            );
        }
        let trusted_proxies = l
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(j, c)| match parse_cidr(c) {
                Ok(net) => Some(net),
                Err(e) => {
                    p.push(format!("{at}.trusted_proxies[{j}]"), e);
                    None
                }
            })
            .collect();
        listeners.push(Listener {
            name: l.name.clone(),
            address,
            h2c: l.h2c,
            tls,
            redirect_https: l.redirect_https.then_some(l.https_port.unwrap_or(0)),
            proxy_protocol: l.proxy_protocol,
            trusted_proxies,
            desync_mitigation: l.desync_mitigation,
        });
    }
    // A redirect without an explicit port goes to the first TLS listener's port (443
    // when there is none: behind a load balancer that terminates TLS).
    let https_port = listeners
        .iter()
        .find(|l| l.tls.is_some())
        .map_or(443, |l| l.address.port());
    for l in &mut listeners {
        if l.redirect_https == Some(0) {
            l.redirect_https = Some(https_port);
        }
    }
    listeners
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`10.1.2.3`, a /32 or /128).
pub(crate) fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    match t.parse::<ipnet::IpNet>() {
        // `10.1.2.3/8` is almost certainly a typo for `10.0.0.0/8`: say so.
        Ok(net) if net.addr() != net.network() => Err(format!(
            "{s:?} has host bits set; did you mean {}/{}?",
            net.network(),
            net.prefix_len()
        )),
        Ok(net) => Ok(net),
        Err(_) => Err(format!(
            "{s:?} is not a CIDR or IP address (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"
        )),
    }
}

fn validate_listener_tls(
    at: &str,
    t: &ListenerTlsFile,
    base_dir: &Path,
    p: &mut Problems,
) -> ListenerTls {
    let tat = format!("{at}.tls");
    if t.certificates.is_empty() {
        p.push(
            format!("{tat}.certificates"),
            "at least one certificate is required",
        );
    }
    let client_auth = t.client_auth.as_ref().and_then(|c| {
        let identity_header = match HeaderName::from_bytes(c.identity_header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                p.push(
                    format!("{tat}.client_auth.identity_header"),
                    "not a header name",
                );
                return None;
            }
        };
        Some(ClientAuth {
            required: c.mode == ClientAuthMode::Required,
            ca: resolve_path(base_dir, &c.ca),
            identity_header,
        })
    });
    ListenerTls {
        certificates: t
            .certificates
            .iter()
            .map(|c| CertPaths {
                cert: resolve_path(base_dir, &c.cert),
                key: resolve_path(base_dir, &c.key),
            })
            .collect(),
        default_certificate: t.default_certificate.clone(),
        min_tls13: t.min_version == TlsVersion::Tls13,
        http2: t.http2,
        client_auth,
    }
}
