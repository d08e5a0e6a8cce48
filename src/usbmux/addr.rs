//! Where a usbmuxd listens.
//!
//! Accepted forms (brief §2): `UNIX:/path` (libusbmuxd's `USBMUXD_SOCKET_ADDRESS` form), a bare
//! absolute path (what people type; libusbmuxd ignores it but `lab` accepts it), and `host:port`
//! or `[v6]:port` (TCP: how a lab exposes a remote host's usbmuxd). The port is the text after
//! the last `:`.

use std::fmt;
use std::path::PathBuf;

/// The default socket of usbmuxd on Linux and macOS (brief §2).
pub const DEFAULT_SOCKET: &str = "/var/run/usbmuxd";
/// The environment variable libusbmuxd ≥ 2.0 reads (brief §2).
pub const ENV_VAR: &str = "USBMUXD_SOCKET_ADDRESS";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsbmuxAddr {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("usbmuxd address is empty")]
    Empty,
    #[error("usbmuxd address {0:?} is neither UNIX:/path, an absolute path, nor host:port")]
    Unrecognised(String),
    #[error("usbmuxd address {addr:?}: port {port:?} is not a number from 1 to 65535")]
    BadPort { addr: String, port: String },
}

impl UsbmuxAddr {
    /// Parse an address a client connects to (port 1..=65535).
    pub fn parse(s: &str) -> Result<Self, AddrError> {
        Self::parse_inner(s, false)
    }

    /// Parse an address a server binds (port 0 = any free port).
    pub fn parse_listen(s: &str) -> Result<Self, AddrError> {
        Self::parse_inner(s, true)
    }

    fn parse_inner(s: &str, allow_zero: bool) -> Result<Self, AddrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        if let Some(rest) = s.strip_prefix("UNIX:").or_else(|| s.strip_prefix("unix:")) {
            let rest = rest.trim_start_matches("//");
            if rest.is_empty() {
                return Err(AddrError::Unrecognised(s.to_string()));
            }
            return Ok(UsbmuxAddr::Unix(PathBuf::from(rest)));
        }
        if s.starts_with('/') {
            return Ok(UsbmuxAddr::Unix(PathBuf::from(s)));
        }
        let Some(idx) = s.rfind(':') else {
            return Err(AddrError::Unrecognised(s.to_string()));
        };
        let (host, port) = (&s[..idx], &s[idx + 1..]);
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(AddrError::Unrecognised(s.to_string()));
        }
        let bad = || AddrError::BadPort {
            addr: s.to_string(),
            port: port.to_string(),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 && !allow_zero {
            return Err(bad());
        }
        Ok(UsbmuxAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// Parse every address of a list of flag values, each possibly comma-separated.
    pub fn parse_list<S: AsRef<str>>(values: &[S]) -> Result<Vec<Self>, AddrError> {
        let mut out = Vec::new();
        for v in values {
            for part in v.as_ref().split(',') {
                if part.trim().is_empty() {
                    continue;
                }
                let a = Self::parse(part)?;
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        if out.is_empty() {
            return Err(AddrError::Empty);
        }
        Ok(out)
    }

    /// The addresses to use: the flag values, else `USBMUXD_SOCKET_ADDRESS`, else the default.
    pub fn resolve(flags: &[String], env: Option<&str>) -> Result<Vec<Self>, AddrError> {
        if !flags.is_empty() {
            return Self::parse_list(flags);
        }
        match env {
            Some(v) if !v.trim().is_empty() => Self::parse_list(&[v]),
            _ => Ok(vec![UsbmuxAddr::Unix(PathBuf::from(DEFAULT_SOCKET))]),
        }
    }
}

impl fmt::Display for UsbmuxAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsbmuxAddr::Unix(p) => write!(f, "UNIX:{}", p.display()),
            UsbmuxAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            UsbmuxAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(
            UsbmuxAddr::parse("UNIX:/tmp/mux").unwrap(),
            UsbmuxAddr::Unix("/tmp/mux".into())
        );
        assert_eq!(
            UsbmuxAddr::parse("/var/run/usbmuxd").unwrap(),
            UsbmuxAddr::Unix("/var/run/usbmuxd".into())
        );
        assert_eq!(
            UsbmuxAddr::parse("127.0.0.1:27015").unwrap(),
            UsbmuxAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 27015
            }
        );
        assert_eq!(
            UsbmuxAddr::parse("[::1]:27015").unwrap(),
            UsbmuxAddr::Tcp {
                host: "::1".into(),
                port: 27015
            }
        );
        assert_eq!(
            UsbmuxAddr::parse("bench-2.local:27015")
                .unwrap()
                .to_string(),
            "bench-2.local:27015"
        );
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        assert_eq!(UsbmuxAddr::parse(""), Err(AddrError::Empty));
        assert!(matches!(
            UsbmuxAddr::parse("relative/path"),
            Err(AddrError::Unrecognised(_))
        ));
        assert!(matches!(
            UsbmuxAddr::parse("host:99999"),
            Err(AddrError::BadPort { .. })
        ));
        assert!(matches!(
            UsbmuxAddr::parse("host:0"),
            Err(AddrError::BadPort { .. })
        ));
        assert!(UsbmuxAddr::parse_listen("127.0.0.1:0").is_ok());
    }

    #[test]
    fn lists_split_on_commas_and_flags_beat_the_environment() {
        let flags = vec!["127.0.0.1:1,127.0.0.1:2".to_string(), "UNIX:/x".to_string()];
        let l = UsbmuxAddr::resolve(&flags, Some("10.0.0.1:5")).unwrap();
        assert_eq!(l.len(), 3);
        let l = UsbmuxAddr::resolve(&[], Some("127.0.0.1:9")).unwrap();
        assert_eq!(l[0].to_string(), "127.0.0.1:9");
        let l = UsbmuxAddr::resolve(&[], None).unwrap();
        assert_eq!(l[0], UsbmuxAddr::Unix(DEFAULT_SOCKET.into()));
    }
}
