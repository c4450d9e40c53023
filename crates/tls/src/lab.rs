//! The lab CA behind `ftvm certs init`: a fresh certificate authority and
//! one certificate per identity of a deployment — each host (with the VMs
//! it may run), the storage host, each operator — written as PEM files in a
//! layout that qemu's `tls-creds-x509` objects and libnbd's
//! `tls-certificates=DIR` read as they are: every identity gets a directory
//! holding `ca-cert.pem` and its `server-cert.pem`/`server-key.pem` and/or
//! `client-cert.pem`/`client-key.pem`. Keys are ECDSA P-256, written with
//! mode 0600; the CA key stays at the top of the directory and is needed by
//! no process. Certificates carry the identity URIs of [`crate::identity`],
//! the key usages and purposes qemu checks (digitalSignature and
//! keyEncipherment; serverAuth for servers, clientAuth for clients), and on
//! server certificates DNS/IP names, since qemu and libnbd match those.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{role_uri, valid_name, vm_uri, Role};
use crate::TlsError;

/// What `ftvm certs init` makes.
#[derive(Debug, Clone)]
pub struct LabPlan {
    /// VM hosts and the VMs each may run; each gets `host-NAME/` with a
    /// certificate for both ends.
    pub hosts: Vec<(String, Vec<String>)>,
    /// Operators; each gets `operator-NAME/` with a client certificate.
    pub operators: Vec<String>,
    /// The storage host's name; it gets `storage/` with a server certificate.
    pub storage: String,
    /// DNS names and IP addresses put on server certificates (qemu and
    /// libnbd check the address they connect to against them).
    pub server_names: Vec<String>,
    /// How long the certificates are valid.
    pub days: u32,
}

/// The CA certificate at the top of the directory.
pub const CA_CERT: &str = "ca-cert.pem";
/// The CA key at the top of the directory.
pub const CA_KEY: &str = "ca-key.pem";

/// Checks a plan before anything is written.
pub fn check_plan(plan: &LabPlan) -> Result<(), TlsError> {
    let bad = |what: &str, n: &str| {
        TlsError::Plan(format!(
            "{what} {n:?} is not a valid name (1-255 characters from [A-Za-z0-9._+-], not starting with '.' or '-')"
        ))
    };
    let mut vms: Vec<&String> = Vec::new();
    for (h, hv) in &plan.hosts {
        if !valid_name(h) {
            return Err(bad("host", h));
        }
        if hv.is_empty() {
            return Err(TlsError::Plan(format!("host {h:?} runs no VM")));
        }
        for v in hv {
            if !valid_name(v) {
                return Err(bad("VM", v));
            }
            vms.push(v);
        }
    }
    for o in &plan.operators {
        if !valid_name(o) {
            return Err(bad("operator", o));
        }
    }
    if !valid_name(&plan.storage) {
        return Err(bad("storage", &plan.storage));
    }
    if plan.hosts.is_empty() {
        return Err(TlsError::Plan("at least one host is needed".into()));
    }
    // Exports belong to a VM by name (VM, or VM-anything): a VM named like
    // another VM's export would let that VM's hosts open the other's disks.
    for a in &vms {
        for b in &vms {
            if a != b && b.starts_with(&format!("{a}-")) {
                return Err(TlsError::Plan(format!(
                    "VM names {a:?} and {b:?} clash: exports of {b:?} would also count as {a:?}'s (an export belongs to the VM it is named after, VM or VM-*)"
                )));
            }
        }
    }
    if plan.days == 0 {
        return Err(TlsError::Plan(
            "certificates must be valid for at least a day".into(),
        ));
    }
    Ok(())
}

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Plan(format!("cannot make a certificate: {e}"))
}

fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let io = |e: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)
}

struct Leaf<'a> {
    dir: &'a str,
    role: Role,
    name: &'a str,
    vms: &'a [String],
    server: bool,
    client: bool,
}

/// Makes the CA and every certificate of `plan` in `dir` (created if
/// missing; an existing CA there is an error, nothing is overwritten).
/// Returns the files written.
pub fn init(dir: &Path, plan: &LabPlan) -> Result<Vec<PathBuf>, TlsError> {
    check_plan(plan)?;
    if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
        return Err(TlsError::Plan(format!(
            "{} already holds a CA ({CA_CERT}); use another directory or remove it",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.to_path_buf(),
        why: e.to_string(),
    })?;
    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);

    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "ftvm lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut written = Vec::new();
    let top_cert = dir.join(CA_CERT);
    write_file(&top_cert, &ca_pem, false)?;
    written.push(top_cert);
    let top_key = dir.join(CA_KEY);
    write_file(&top_key, &issuer_key_pem(&issuer), true)?;
    written.push(top_key);

    let host_dirs: Vec<String> = plan
        .hosts
        .iter()
        .map(|(h, _)| format!("host-{h}"))
        .collect();
    let op_dirs: Vec<String> = plan
        .operators
        .iter()
        .map(|o| format!("operator-{o}"))
        .collect();
    let mut leaves = vec![Leaf {
        dir: "storage",
        role: Role::Storage,
        name: &plan.storage,
        vms: &[],
        server: true,
        client: false,
    }];
    for ((h, hv), d) in plan.hosts.iter().zip(&host_dirs) {
        leaves.push(Leaf {
            dir: d,
            role: Role::Host,
            name: h,
            vms: hv,
            server: true,
            client: true,
        });
    }
    for (o, d) in plan.operators.iter().zip(&op_dirs) {
        leaves.push(Leaf {
            dir: d,
            role: Role::Operator,
            name: o,
            vms: &[],
            server: false,
            client: true,
        });
    }
    for leaf in leaves {
        let sub = dir.join(leaf.dir);
        fs::create_dir_all(&sub).map_err(|e| TlsError::File {
            path: sub.clone(),
            why: e.to_string(),
        })?;
        let key = KeyPair::generate().map_err(rc)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            format!("ftvm {} {}", leaf.role, leaf.name),
        );
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before;
        p.not_after = now + Duration::days(i64::from(plan.days));
        let ia5 = |s: String| s.try_into().map_err(rc);
        p.subject_alt_names
            .push(SanType::URI(ia5(role_uri(leaf.role, leaf.name))?));
        for vm in leaf.vms {
            p.subject_alt_names.push(SanType::URI(ia5(vm_uri(vm))?));
        }
        if leaf.server {
            let mut names = vec![leaf.name.to_string()];
            names.extend(plan.server_names.iter().cloned());
            names.dedup();
            for n in names {
                p.subject_alt_names.push(match n.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(ia5(n)?),
                });
            }
        }
        let cert = p.signed_by(&key, &issuer).map_err(rc)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let mut files = vec![(CA_CERT, ca_pem.as_str(), false)];
        if leaf.server {
            files.push(("server-cert.pem", &cert_pem, false));
            files.push(("server-key.pem", &key_pem, true));
        }
        if leaf.client {
            files.push(("client-cert.pem", &cert_pem, false));
            files.push(("client-key.pem", &key_pem, true));
        }
        for (name, text, secret) in files {
            let path = sub.join(name);
            write_file(&path, text, secret)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn issuer_key_pem(issuer: &Issuer<'_, KeyPair>) -> String {
    issuer.key().serialize_pem()
}
