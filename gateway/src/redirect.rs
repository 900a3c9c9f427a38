//! The HTTP to HTTPS redirect: which host a request names, and the `Location` it is sent to.
//!
//! The host comes from the absolute-form request target when there is one, else from the one
//! `Host` header. It is validated (a DNS name, an IPv4 address, or a bracketed IPv6 address),
//! its port dropped; the port of `Location` is the HTTPS listener's, written only when it is
//! not 443. Path and query are copied byte for byte.

use std::net::Ipv6Addr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, HOST};
use http::{Method, Request, StatusCode};

use crate::config::RedirectSettings;

/// Why no redirect can be made for a request; each is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No authority in the target and no `Host` header.
    #[error("the request names no host")]
    Missing,
    /// Two `Host` headers.
    #[error("the request has more than one Host header")]
    Repeated,
    /// Not a DNS name or an IP address, or a bad port.
    #[error("the request's host is malformed")]
    Malformed,
    /// The target is `*` or otherwise not a path.
    #[error("the request target is not a path")]
    NotAPath,
}

/// The redirect as configured, ready to answer requests.
#[derive(Debug, Clone)]
pub struct Redirect {
    status: StatusCode,
    status_other_methods: StatusCode,
    /// `":8443"`, or empty for 443.
    port_suffix: String,
}

impl Redirect {
    /// `https_port` is the port clients reach the HTTPS listener on.
    pub fn new(settings: &RedirectSettings, https_port: u16) -> Redirect {
        let port = settings.https_port.unwrap_or(https_port);
        Redirect {
            status: settings.status,
            status_other_methods: settings.status_other_methods,
            port_suffix: if port == 443 {
                String::new()
            } else {
                format!(":{port}")
            },
        }
    }

    /// The status for a request of `method`.
    pub fn status_for(&self, method: &Method) -> StatusCode {
        if method == Method::GET || method == Method::HEAD {
            self.status
        } else {
            self.status_other_methods
        }
    }

    /// The `Location` for `req`, or why there can be none.
    pub fn location<B>(&self, req: &Request<B>) -> Result<HeaderValue, HostError> {
        let host = request_host(req)?;
        let path = match req.uri().path_and_query() {
            None => "/",
            Some(p) if p.as_str().starts_with('/') => p.as_str(),
            Some(_) => return Err(HostError::NotAPath),
        };
        let mut out = BytesMut::with_capacity(8 + host.len() + self.port_suffix.len() + path.len());
        out.put_slice(b"https://");
        out.put_slice(host.as_bytes());
        out.put_slice(self.port_suffix.as_bytes());
        out.put_slice(path.as_bytes());
        HeaderValue::from_maybe_shared(Bytes::from(out)).map_err(|_| HostError::Malformed)
    }
}

/// The host a request names, validated, without its port (IPv6 brackets kept).
pub fn request_host<B>(req: &Request<B>) -> Result<&str, HostError> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => {
            let mut hosts = req.headers().get_all(HOST).iter();
            let host = hosts.next().ok_or(HostError::Missing)?;
            if hosts.next().is_some() {
                return Err(HostError::Repeated);
            }
            host.to_str().map_err(|_| HostError::Malformed)?
        }
    };
    split_host(authority)
}

/// Splits `host[:port]` and validates both parts.
pub fn split_host(authority: &str) -> Result<&str, HostError> {
    if authority.is_empty() {
        return Err(HostError::Missing);
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(HostError::Malformed)?;
        let (host, rest) = authority.split_at(end + 1);
        host[1..end]
            .parse::<Ipv6Addr>()
            .map_err(|_| HostError::Malformed)?;
        let port = match rest {
            "" => None,
            r => Some(r.strip_prefix(':').ok_or(HostError::Malformed)?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        // An empty port is allowed by RFC 3986; anything else must be a 16-bit number.
        // (`u16::from_str` alone takes a leading `+`.)
        let digits = port.bytes().all(|b| b.is_ascii_digit());
        if !port.is_empty() && (!digits || port.len() > 5 || port.parse::<u16>().is_err()) {
            return Err(HostError::Malformed);
        }
    }
    if !host.starts_with('[') && !is_dns_name(host) {
        return Err(HostError::Malformed);
    }
    Ok(host)
}

/// A DNS name or dotted IPv4 address: labels of letters, digits, `-` and `_`, 1 to 63 bytes
/// each, 253 in all, one trailing dot allowed.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(split_host("app.example.com:8080"), Ok("app.example.com"));
        assert_eq!(split_host("[::1]:80"), Ok("[::1]"));
        assert_eq!(split_host("[::1]"), Ok("[::1]"));
        assert_eq!(split_host("203.0.113.1"), Ok("203.0.113.1"));
        assert_eq!(split_host("a.b:"), Ok("a.b"));
        for bad in [
            "",
            "a b",
            "[::1",
            "[zz]:1",
            "a:b:c",
            "x:99999",
            "-a.b",
            "a..b",
            "a/b",
            "a.b:+80",
            "[::1]:+80",
            "a.b:-1",
        ] {
            assert!(split_host(bad).is_err(), "{bad:?} accepted");
        }
    }
}
