//! The arbiter address `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`: the cluster's
//! client endpoints (any subset works; the client balances over them and
//! etcd forwards to the leader) and the key prefix under which this arbiter
//! keeps its VMs, so several clusters of pairs can share one etcd.

use std::fmt;

use crate::EtcdError;

/// A parsed `etcd://` arbiter address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// `http://HOST:PORT` for each member given.
    pub endpoints: Vec<String>,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    text: String,
}

impl EtcdTarget {
    /// Whether `s` is meant as an etcd address (so parse errors can say so).
    pub fn is_etcd(s: &str) -> bool {
        s.starts_with("etcd://")
    }

    /// Parses `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`.
    pub fn parse(s: &str) -> Result<EtcdTarget, EtcdError> {
        let bad = |why: &str| EtcdError::BadTarget {
            addr: s.to_string(),
            why: why.to_string(),
        };
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("must start with etcd://"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, p.trim_matches('/')),
            None => (rest, ""),
        };
        if hosts.is_empty() {
            return Err(bad("no HOST:PORT endpoints"));
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("endpoint {h:?} has no :PORT")))?;
            if host.is_empty() {
                return Err(bad(&format!("endpoint {h:?} has no host")));
            }
            port.parse::<u16>()
                .map_err(|_| bad(&format!("endpoint {h:?}: port {port:?} is not a number")))?;
            endpoints.push(format!("http://{host}:{port}"));
        }
        if prefix.chars().any(char::is_control) {
            return Err(bad("the prefix contains control characters"));
        }
        Ok(EtcdTarget {
            endpoints,
            prefix: prefix.to_string(),
            text: s.to_string(),
        })
    }
}

impl fmt::Display for EtcdTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_and_prefix() {
        let t = EtcdTarget::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/ftvm/prod/").unwrap();
        assert_eq!(
            t.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(t.prefix, "ftvm/prod");
        assert_eq!(EtcdTarget::parse("etcd://h:1").unwrap().prefix, "");
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "http://h:1/p",
            "etcd:///p",
            "etcd://h/p",
            "etcd://h:x/p",
            "etcd://:1/p",
            "etcd://h:1,/p",
            "etcd://h:99999/p",
        ] {
            assert!(EtcdTarget::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
