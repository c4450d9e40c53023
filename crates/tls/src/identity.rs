//! Identities: who a certificate says its holder is. An ftvm certificate
//! carries its holder's role and name as a subject-alternative-name URI —
//! `urn:ftvm:host:<name>`, `urn:ftvm:storage:<name>` or
//! `urn:ftvm:operator:<name>`, exactly one of them — and a host certificate
//! also lists the VMs the host may run, one `urn:ftvm:vm:<vm>` URI each.
//! This module owns that scheme: building the URIs (for the lab CA), reading
//! them back from a peer's certificate once TLS has verified its chain, and
//! the questions the servers ask of an identity ("is this a host of vm0?",
//! "is this an operator?"). Other URIs and DNS/IP names in a certificate are
//! ignored here; a certificate with no role, two roles, an unknown `urn:ftvm:`
//! kind or a VM on a non-host is refused rather than guessed at.

use std::fmt;

use x509_parser::extensions::GeneralName;

/// The prefix of every ftvm identity URI.
pub const URN_PREFIX: &str = "urn:ftvm:";

/// What a certificate's holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A VM host: runs `ftvm primary`/`ftvm backup` for the VMs it lists.
    Host,
    /// The shared storage host (`ftvm storage`: NBD and the arbiter).
    Storage,
    /// A person or tool administering pairs (`ftvm arbiter advance`, disk maintenance).
    Operator,
}

impl Role {
    /// The role's word in URIs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Storage => "storage",
            Role::Operator => "operator",
        }
    }

    fn from_kind(kind: &str) -> Option<Role> {
        match kind {
            "host" => Some(Role::Host),
            "storage" => Some(Role::Storage),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate does not carry a usable ftvm identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the peer sent no certificate")]
    NoCertificate,
    #[error("certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("certificate has no urn:ftvm:host|storage|operator:NAME name (not an ftvm identity)")]
    NoRole,
    #[error("certificate names two roles ({0} and {1})")]
    TwoRoles(String, String),
    #[error("certificate has an unknown ftvm name {0:?}")]
    UnknownKind(String),
    #[error("certificate has an invalid ftvm name {uri:?}: {why}")]
    BadName { uri: String, why: String },
    #[error("certificate of a {0} lists VMs; only host certificates may")]
    VmsOnNonHost(Role),
}

/// Whether `s` can be an identity or VM name in a certificate: 1–255
/// characters from `[A-Za-z0-9._+-]`, not starting with `.` or `-` (the
/// export-name alphabet, so that URIs need no escaping).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// The URI naming a holder of `role` called `name`.
pub fn role_uri(role: Role, name: &str) -> String {
    format!("{URN_PREFIX}{}:{name}", role.as_str())
}

/// The URI listing `vm` on a host certificate.
pub fn vm_uri(vm: &str) -> String {
    format!("{URN_PREFIX}vm:{vm}")
}

/// A verified peer: its role, its name and (for a host) its VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    role: Role,
    name: String,
    vms: Vec<String>,
}

impl Identity {
    /// An identity from its parts (the lab CA and tests build them).
    pub fn new(role: Role, name: &str, vms: &[&str]) -> Identity {
        Identity {
            role,
            name: name.to_string(),
            vms: vms.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// Reads the identity from a DER certificate. The caller must already
    /// have verified the certificate (TLS did); this only reads names.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Identity::from_uris(&uris)
    }

    /// Reads the identity from a certificate's URI names.
    pub fn from_uris(uris: &[&str]) -> Result<Identity, IdentityError> {
        let mut role: Option<(Role, String)> = None;
        let mut vms = Vec::new();
        for uri in uris {
            let Some(rest) = uri.strip_prefix(URN_PREFIX) else {
                continue;
            };
            let Some((kind, name)) = rest.split_once(':') else {
                return Err(IdentityError::UnknownKind(uri.to_string()));
            };
            if !valid_name(name) {
                return Err(IdentityError::BadName {
                    uri: uri.to_string(),
                    why: "names are 1-255 characters from [A-Za-z0-9._+-]".into(),
                });
            }
            if kind == "vm" {
                if !vms.iter().any(|v| v == name) {
                    vms.push(name.to_string());
                }
                continue;
            }
            let Some(r) = Role::from_kind(kind) else {
                return Err(IdentityError::UnknownKind(uri.to_string()));
            };
            if let Some((old, old_name)) = &role {
                return Err(IdentityError::TwoRoles(
                    format!("{old} {old_name}"),
                    format!("{r} {name}"),
                ));
            }
            role = Some((r, name.to_string()));
        }
        let Some((role, name)) = role else {
            return Err(IdentityError::NoRole);
        };
        if role != Role::Host && !vms.is_empty() {
            return Err(IdentityError::VmsOnNonHost(role));
        }
        Ok(Identity { role, name, vms })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VMs a host certificate lists (empty for other roles).
    pub fn vms(&self) -> &[String] {
        &self.vms
    }

    /// Whether this is a host certificate listing `vm`.
    pub fn is_host_of(&self, vm: &str) -> bool {
        self.role == Role::Host && self.vms.iter().any(|v| v == vm)
    }

    /// Whether this is an operator certificate.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether this is a storage certificate.
    pub fn is_storage(&self) -> bool {
        self.role == Role::Storage
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)?;
        if self.role == Role::Host {
            if self.vms.is_empty() {
                write!(f, " (no VMs)")?;
            } else {
                write!(f, " (VMs {})", self.vms.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_roles_and_vms() {
        let id = Identity::from_uris(&[
            "urn:ftvm:vm:vm0",
            "urn:ftvm:host:h1",
            "https://example.invalid/x",
            "urn:ftvm:vm:vm1",
            "urn:ftvm:vm:vm0",
        ])
        .unwrap();
        assert_eq!(id, Identity::new(Role::Host, "h1", &["vm0", "vm1"]));
        assert!(id.is_host_of("vm1"));
        assert!(!id.is_host_of("vm2"));
        assert!(!id.is_operator());
        assert_eq!(id.to_string(), "host h1 (VMs vm0, vm1)");
        let op = Identity::from_uris(&["urn:ftvm:operator:alice"]).unwrap();
        assert!(op.is_operator() && !op.is_host_of("vm0"));
        assert_eq!(op.to_string(), "operator alice");
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        assert_eq!(Identity::from_uris(&[]), Err(IdentityError::NoRole));
        assert_eq!(
            Identity::from_uris(&["urn:ftvm:vm:vm0"]),
            Err(IdentityError::NoRole)
        );
        assert!(matches!(
            Identity::from_uris(&["urn:ftvm:host:a", "urn:ftvm:operator:b"]),
            Err(IdentityError::TwoRoles(..))
        ));
        assert!(matches!(
            Identity::from_uris(&["urn:ftvm:admin:a"]),
            Err(IdentityError::UnknownKind(_))
        ));
        assert!(matches!(
            Identity::from_uris(&["urn:ftvm:host"]),
            Err(IdentityError::UnknownKind(_))
        ));
        assert!(matches!(
            Identity::from_uris(&["urn:ftvm:host:a b"]),
            Err(IdentityError::BadName { .. })
        ));
        assert_eq!(
            Identity::from_uris(&["urn:ftvm:operator:o", "urn:ftvm:vm:vm0"]),
            Err(IdentityError::VmsOnNonHost(Role::Operator))
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("vm0") && valid_name("a.b_c+d-e"));
        assert!(!valid_name("") && !valid_name(".x") && !valid_name("-x"));
        assert!(!valid_name("a/b") && !valid_name("a:b") && !valid_name(&"x".repeat(256)));
        assert_eq!(role_uri(Role::Host, "h1"), "urn:ftvm:host:h1");
        assert_eq!(vm_uri("vm0"), "urn:ftvm:vm:vm0");
    }
}
