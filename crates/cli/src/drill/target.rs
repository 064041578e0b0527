//! Which hosts a drill may attack: loopback (127.0.0.0/8, ::1, `localhost`) and hosts the operator
//! names exactly with `--allow-host`.
//! Must never: accept a host by a partial match of an allowed name (a suffix, a prefix, a
//! pattern), or resolve a name to decide: a name is allowed by what it is, not by where DNS
//! points today.

use std::net::{Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// A target that may be attacked. Only [`check`] makes one, and the drill's client is built only
/// from one, so no request of a drill goes to a host the check did not approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    base: String,
    host: String,
}

impl Target {
    /// `https://127.0.0.1:8443` (a path is kept, its trailing `/` removed).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host as the URL parser normalised it (`127.0.0.1`, `[::1]`, `localhost`).
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// Why a target was refused; the message names the flag to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether a host as `Url::host_str` gives it is loopback. `localhost` only by that exact name
/// (`localhost.example` is another host).
fn is_loopback(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    host == "localhost"
}

/// Parses `--target` and checks it may be attacked: loopback, or a host named exactly in
/// `allowed` (`--allow-host`). Only `http` and `https`, no user name or password, no query or
/// fragment.
pub fn check(url: &str, allowed: &[String]) -> Result<Target, Refused> {
    let parsed =
        Url::parse(url).map_err(|e| Refused(format!("--target: not a URL ({e}); e.g. https://127.0.0.1:8443")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused(format!("--target: the scheme must be https or http, not {}", parsed.scheme())));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refused("--target: must not carry a user name or password".to_owned()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Refused("--target: must not have a query or fragment".to_owned()));
    }
    let host = parsed.host_str().ok_or_else(|| Refused("--target: has no host".to_owned()))?.to_owned();
    if !is_loopback(&host) && !allowed.contains(&host) {
        return Err(Refused(format!(
            "--target: {host} is not a loopback address (127.0.0.0/8, ::1, localhost); a drill attacks only \
             loopback or a test host named exactly with --allow-host {host}"
        )));
    }
    let base = parsed.as_str().trim_end_matches('/').to_owned();
    Ok(Target { base, host })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, allowed: &[&str]) -> bool {
        let allowed: Vec<String> = allowed.iter().map(|a| (*a).to_owned()).collect();
        check(url, &allowed).is_err()
    }

    #[test]
    fn loopback_is_accepted_in_every_spelling() {
        for url in [
            "https://127.0.0.1:8443",
            "https://127.0.0.1:8443/",
            "http://127.9.8.7:1",
            "https://[::1]:8443",
            "https://localhost:8443",
            "https://LOCALHOST:8443",
            "https://127.1:8443",
        ] {
            assert!(!refused(url, &[]), "{url}");
        }
        assert_eq!(check("https://127.0.0.1:8443/", &[]).map(|t| t.base), Ok("https://127.0.0.1:8443".to_owned()));
        assert_eq!(check("https://[::1]:8443", &[]).map(|t| t.host), Ok("[::1]".to_owned()));
    }

    #[test]
    fn other_hosts_are_refused_unless_named_exactly() {
        for url in [
            "https://10.0.0.1:8443",
            "https://192.168.1.5",
            "https://shop.example",
            "https://localhost.example",
            "https://127.0.0.1.nip.io",
            "https://[::ffff:7f00:1]:8443",
            "https://[2001:db8::1]:8443",
            "https://0.0.0.0:8443",
        ] {
            assert!(refused(url, &[]), "{url}");
        }
        assert!(!refused("https://staging.shop.example:8443", &["staging.shop.example"]));
        assert!(refused("https://staging.shop.example:8443", &["shop.example"]), "no suffix match");
        assert!(refused("https://shop.example:8443", &["staging.shop.example"]), "no partial match");
        assert!(refused("https://evilshop.example", &["shop.example"]));
        assert!(!refused("https://10.0.0.1", &["10.0.0.1"]));
        let message = check("https://10.0.0.1", &[]).map(|_| ()).unwrap_err().0;
        assert!(message.contains("--allow-host") && message.contains("--target"), "{message}");
    }

    #[test]
    fn odd_urls_are_refused_naming_the_flag() {
        for url in
            ["ftp://127.0.0.1", "127.0.0.1:8443", "https://user:pw@127.0.0.1", "https://127.0.0.1/?a=b", "nonsense"]
        {
            let message = check(url, &[]).map(|_| ()).unwrap_err().0;
            assert!(message.starts_with("--target"), "{url}: {message}");
        }
    }
}
