//! Where a webhook may be sent: an `http` or `https` URL without credentials whose
//! host is, or resolves only to, public addresses.
//!
//! A webhook URL is chosen by a client and called from inside the network, so an
//! unchecked one would let a client make the system call its own neighbours (the
//! database, a metadata service). The check runs twice: when an endpoint is created
//! ([`vet`], so the client hears at once) and at every delivery, where the delivery
//! client's resolver ([`PublicOnly`]) checks the addresses it actually connects to, so
//! a name that resolved to a public address at creation and to a private one later
//! (DNS rebinding) is still refused. `AIRLINE_WEBHOOK_ALLOW_PRIVATE=true` turns the
//! address check off, for tests and local use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2000;

/// How long resolving a host may take when an endpoint is created.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A syntactically acceptable webhook URL: absolute, `http` or `https`, with a
/// host, without user name or password, at most [`MAX_URL_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a URL is not a webhook URL (the client's mistake: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("must be at most {MAX_URL_LEN} characters")]
    TooLong,
    /// Not an absolute URL.
    #[error("must be an absolute http or https URL ({0})")]
    Malformed(String),
    /// Another scheme.
    #[error("must use http or https, not `{0}`")]
    Scheme(String),
    /// A user name or password in the URL.
    #[error("must not contain a user name or password")]
    Credentials,
    /// No host.
    #[error("must name a host")]
    NoHost,
}

impl WebhookUrl {
    /// Parses and checks a URL's form (not where it leads: see [`vet`]).
    ///
    /// # Errors
    /// [`UrlError`] saying what is wrong.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(raw).map_err(|e| UrlError::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.host().is_none() {
            return Err(UrlError::NoHost);
        }
        Ok(Self(url))
    }

    /// The URL.
    #[must_use]
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL as text, normalised by the parser.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host's address when the URL names one literally (`http://10.0.0.1/`).
    /// The parser has already normalised every IPv4 spelling (`2130706433`,
    /// `0x7f.1`) to dotted form, and put IPv6 addresses in brackets.
    fn literal_ip(&self) -> Option<IpAddr> {
        let host = self.0.host_str()?;
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse()
            .ok()
    }
}

/// Why a destination is refused (well-formed, but not allowed: 422, or a delivery
/// refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The host is or resolves to an address that is not public.
    #[error("leads to {address}, a {kind} address; webhooks are sent to public addresses only")]
    NotPublic {
        /// The address.
        address: IpAddr,
        /// What kind of address it is (`loopback`, `private`, ...).
        kind: &'static str,
    },
    /// The host does not resolve (or not in time).
    #[error("host `{0}` does not resolve to any address")]
    Unresolvable(String),
}

/// What kind of non-public address `ip` is, or `None` when it is public. IPv4
/// addresses embedded in IPv6 ones (mapped, NAT64, 6to4) are judged as IPv4.
#[must_use]
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 198 && (b == 18 || b == 19) {
        "benchmarking"
    } else if (a == 192 && b == 0 && c == 0) || a >= 240 {
        "reserved"
    } else {
        return None;
    };
    Some(kind)
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    let kind = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        "reserved"
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
        return v4_kind(embedded(s[6], s[7]));
    } else if s[0] == 0x2002 {
        // 6to4 (2002::/16) reaches the IPv4 address in its next 32 bits.
        return v4_kind(embedded(s[1], s[2]));
    } else if s[0] == 0x2001 && s[1] == 0 {
        // Teredo tunnels to an IPv4 address that cannot be checked here.
        "tunnelled (Teredo)"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "private (unique local)"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (s[0] & 0xffc0) == 0xfec0 {
        "site-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[0] == 0x2001 && s[1] == 0xdb8 {
        "documentation"
    } else if s[..4] == [0x100, 0, 0, 0] {
        "discard-only"
    } else {
        return None;
    };
    Some(kind)
}

fn check(address: IpAddr) -> Result<(), Refusal> {
    match non_public_kind(address) {
        Some(kind) => Err(Refusal::NotPublic { address, kind }),
        None => Ok(()),
    }
}

/// Resolves `host` and checks every address: one non-public address refuses the
/// whole name (an attacker's name may answer a public and a private address).
///
/// # Errors
/// [`Refusal`] naming the first address refused, or saying that nothing resolved.
pub async fn resolve_public(host: &str) -> Result<Vec<SocketAddr>, Refusal> {
    let unresolvable = || Refusal::Unresolvable(host.to_owned());
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| unresolvable())?
        .collect();
    if addrs.is_empty() {
        return Err(unresolvable());
    }
    for addr in &addrs {
        check(addr.ip())?;
    }
    Ok(addrs)
}

/// Checks where `url` leads: a literal address directly, a name by resolving it
/// (within 5 s). With `allow_private`, everything is allowed.
///
/// # Errors
/// [`Refusal`] when the host is or resolves to a non-public address, or does not
/// resolve.
pub async fn vet(url: &WebhookUrl, allow_private: bool) -> Result<(), Refusal> {
    if allow_private {
        return Ok(());
    }
    if let Some(ip) = url.literal_ip() {
        return check(ip);
    }
    let host = url.as_url().host_str().unwrap_or_default().to_owned();
    match tokio::time::timeout(RESOLVE_TIMEOUT, resolve_public(&host)).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(Refusal::Unresolvable(host)),
    }
}

/// Checks a URL's literal address at delivery (a name is checked by [`PublicOnly`]
/// when the client connects; a literal address never reaches a resolver).
///
/// # Errors
/// [`Refusal`] for a literal non-public address.
pub fn check_literal(url: &WebhookUrl) -> Result<(), Refusal> {
    url.literal_ip().map_or(Ok(()), check)
}

/// The delivery client's resolver: resolves as the system does, then refuses the
/// name if any address is not public. The client connects only to the addresses it
/// returns, so the addresses checked are the addresses called.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_public(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`Refusal`] somewhere in an error's chain of causes, if any (a delivery
/// refused by [`PublicOnly`] comes back wrapped in the client's errors).
#[must_use]
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        let table: &[(&str, Option<&str>)] = &[
            ("93.184.215.14", None),
            ("8.8.8.8", None),
            ("2606:4700:4700::1111", None),
            ("100.63.255.255", None),
            ("100.128.0.1", None),
            ("172.32.0.1", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.16.5.4", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("100.127.255.255", Some("shared (carrier-grade NAT)")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("255.255.255.255", Some("broadcast")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("192.0.2.10", Some("documentation")),
            ("198.18.0.1", Some("benchmarking")),
            ("192.0.0.8", Some("reserved")),
            ("240.0.0.1", Some("reserved")),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("reserved")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:0808:0808::", None),
            ("2001:0:4136:e378::1", Some("tunnelled (Teredo)")),
            ("fc00::1", Some("private (unique local)")),
            ("fd12:3456::1", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("100::1", Some("discard-only")),
        ];
        for (ip, kind) in table {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(non_public_kind(parsed), *kind, "{ip}");
        }
    }

    #[test]
    fn urls_must_be_plain_http_or_https() {
        assert!(WebhookUrl::parse("https://hooks.example.com/airline?x=1").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:8080/hook").is_ok());
        assert_eq!(
            WebhookUrl::parse("ftp://example.com/"),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            WebhookUrl::parse("file:///etc/passwd"),
            Err(UrlError::Scheme("file".into()))
        );
        assert_eq!(
            WebhookUrl::parse("https://user:pw@example.com/"),
            Err(UrlError::Credentials)
        );
        assert_eq!(
            WebhookUrl::parse("https://user@example.com/"),
            Err(UrlError::Credentials)
        );
        assert!(matches!(
            WebhookUrl::parse("example.com/hook"),
            Err(UrlError::Malformed(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(WebhookUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[tokio::test]
    async fn literal_and_resolved_private_addresses_are_refused() {
        let refused = |raw: &str| {
            let url = WebhookUrl::parse(raw).expect("well-formed");
            async move { vet(&url, false).await }
        };
        assert!(matches!(
            refused("http://10.0.0.1/").await,
            Err(Refusal::NotPublic {
                kind: "private",
                ..
            })
        ));
        assert!(matches!(
            refused("http://[::ffff:127.0.0.1]:9000/").await,
            Err(Refusal::NotPublic {
                kind: "loopback",
                ..
            })
        ));
        assert!(matches!(
            refused("http://localhost:9000/").await,
            Err(Refusal::NotPublic {
                kind: "loopback",
                ..
            })
        ));
        let metadata = WebhookUrl::parse("http://169.254.169.254/").expect("url");
        assert!(check_literal(&metadata).is_err());
        let decimal = WebhookUrl::parse("http://2130706433/").expect("url");
        assert!(
            check_literal(&decimal).is_err(),
            "127.0.0.1 spelt as a number"
        );
        let url = WebhookUrl::parse("http://127.0.0.1/").expect("url");
        assert_eq!(vet(&url, true).await, Ok(()), "allowed when asked");
    }

    #[tokio::test]
    async fn the_delivery_resolver_refuses_private_names() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().expect("a name");
        let error = match PublicOnly.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(refusal_in(&*error).is_some(), "{error}");
    }
}
