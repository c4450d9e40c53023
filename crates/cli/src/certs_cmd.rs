//! `ftvm certs init DIR`: makes a lab certificate authority and the
//! certificates of one deployment (hosts with their VMs, the storage host,
//! operators) with `ftvm_tls::lab`, and tells the user which files each
//! process takes. This module owns only the command line and the summary
//! it prints; the identity scheme and the file layout are `ftvm-tls`'s and
//! are described in docs/security.md.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ftvm_tls::lab::{self, LabPlan};

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub action: CertsAction,
}

#[derive(Subcommand, Debug)]
pub enum CertsAction {
    /// Make a CA and per-host, storage and operator certificates in DIR.
    ///
    /// Every identity gets a directory that is also a qemu `tls-creds-x509`
    /// dir and a libnbd `tls-certificates=` dir: storage/ (server-*),
    /// host-NAME/ (server-* and client-*, the same certificate) and
    /// operator-NAME/ (client-*), each with ca-cert.pem. DIR/ca-key.pem is
    /// the CA's key: no process needs it. Nothing existing is overwritten.
    Init(InitArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to create the files in (created if missing; must not hold a CA yet).
    pub dir: PathBuf,
    /// The VM hosts (comma-separated); each may run every VM of --vms.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', requires = "vms")]
    pub hosts: Vec<String>,
    /// The VMs the hosts of --hosts run (comma-separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',', requires = "hosts")]
    pub vms: Vec<String>,
    /// Another host with its own VMs (NAME=VM[+VM...]); repeatable.
    #[arg(long = "host", value_name = "NAME=VMS")]
    pub host: Vec<String>,
    /// An operator identity (may `ftvm arbiter advance`/`history`); repeatable.
    #[arg(long = "operator", value_name = "NAME")]
    pub operators: Vec<String>,
    /// The storage host's identity name.
    #[arg(long, value_name = "NAME", default_value = "storage")]
    pub storage: String,
    /// A DNS name or IP address clients such as qemu and nbdinfo use to
    /// reach a server, put on the storage and host certificates; repeatable.
    #[arg(
        long = "server-name",
        value_name = "NAME|IP",
        default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()]
    )]
    pub server_names: Vec<String>,
    /// How many days the certificates are valid (the CA: ten years).
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: u32,
}

pub fn certs(args: CertsArgs) -> Result<u8> {
    match args.action {
        CertsAction::Init(a) => init(a),
    }
}

fn init(a: InitArgs) -> Result<u8> {
    let mut hosts: Vec<(String, Vec<String>)> =
        a.hosts.iter().map(|h| (h.clone(), a.vms.clone())).collect();
    for spec in &a.host {
        let Some((name, vms)) = spec.split_once('=') else {
            anyhow::bail!("--host {spec:?}: expected NAME=VM[+VM...]");
        };
        hosts.push((
            name.to_string(),
            vms.split('+').map(str::to_string).collect(),
        ));
    }
    let plan = LabPlan {
        hosts,
        operators: a.operators,
        storage: a.storage,
        server_names: a.server_names,
        days: a.days,
    };
    let written = lab::init(&a.dir, &plan)?;
    let d = a.dir.display();
    println!("ftvm certs: wrote {} files in {d}", written.len());
    println!(
        "  ftvm storage --tls-cert {d}/storage/server-cert.pem --tls-key {d}/storage/server-key.pem --tls-ca {d}/ca-cert.pem ..."
    );
    for (h, vms) in &plan.hosts {
        println!(
            "  host {h} (VMs {}): --tls-cert {d}/host-{h}/client-cert.pem --tls-key {d}/host-{h}/client-key.pem --tls-ca {d}/ca-cert.pem",
            vms.join(",")
        );
    }
    for o in &plan.operators {
        println!(
            "  ftvm arbiter --tls-cert {d}/operator-{o}/client-cert.pem --tls-key {d}/operator-{o}/client-key.pem --tls-ca {d}/ca-cert.pem ..."
        );
    }
    println!(
        "  qemu: --object tls-creds-x509,id=tls0,endpoint=client,dir={d}/operator-NAME (or host-NAME); nbdinfo: 'nbds://HOST/EXPORT?tls-certificates={d}/operator-NAME'"
    );
    Ok(0)
}
