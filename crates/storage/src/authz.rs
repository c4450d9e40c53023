//! Who may do what on `ftvm storage` once TLS has told us who the peer is.
//! This module owns the rules and nothing else, so that the protocol code
//! asks one question per request and the rules can be read in one place
//! (docs/security.md repeats them):
//!
//! - **NBD.** An export belongs to the VM it is named after: export `V` and
//!   every export `V-…` (`vm0`, `vm0-disk1`) are VM `V`'s. A host
//!   certificate may open (and list) the exports of the VMs it lists; an
//!   operator may open every export (maintenance, backups, `qemu-img`); a
//!   storage certificate opens nothing.
//! - **Arbiter.** TestAndSet for VM `V` only from a host of `V`. Query `V`
//!   from a host of `V` or an operator. History only from an operator.
//!   Advance `V` from an operator — or from a host of `V`, because the
//!   survivor of a pair advances the generation itself when a new backup
//!   joins it (re-protection), and a host of `V` can already halt its own
//!   pair.
//!
//! Without TLS (`--insecure`) there is no identity and every request is
//! allowed, as before TLS existed.

use ftvm_tls::Identity;

use crate::arbiter::wire::Request;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// The server runs without TLS: nobody is authenticated, all is allowed.
    Unauthenticated,
    /// A verified TLS client.
    Verified(Identity),
}

/// Whether `export` belongs to `vm`: it is `vm` or starts with `vm-`.
pub(crate) fn export_of_vm(export: &str, vm: &str) -> bool {
    export == vm
        || export
            .strip_prefix(vm)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// May `peer` open (or see in a list) export `export`?
pub(crate) fn may_open_export(peer: &Peer, export: &str) -> Result<(), String> {
    let id = match peer {
        Peer::Unauthenticated => return Ok(()),
        Peer::Verified(id) => id,
    };
    let host_of_it =
        id.role() == ftvm_tls::Role::Host && id.vms().iter().any(|vm| export_of_vm(export, vm));
    if id.is_operator() || host_of_it {
        return Ok(());
    }
    Err(format!(
        "{id} may not open export {export:?} (a host opens only the exports of its VMs: VM or VM-*)"
    ))
}

/// May `peer` make this arbiter request?
pub(crate) fn may_request(peer: &Peer, request: &Request) -> Result<(), String> {
    let id = match peer {
        Peer::Unauthenticated => return Ok(()),
        Peer::Verified(id) => id,
    };
    let (allowed, what, vm, rule) = match request {
        Request::TestAndSet { vm, .. } => (
            id.is_host_of(vm),
            "test-and-set",
            vm,
            "only a host of the VM",
        ),
        Request::Query { vm } => (
            id.is_host_of(vm) || id.is_operator(),
            "query",
            vm,
            "a host of the VM or an operator",
        ),
        Request::History { vm } => (id.is_operator(), "read the history of", vm, "an operator"),
        Request::Advance { vm, .. } => (
            id.is_operator() || id.is_host_of(vm),
            "advance",
            vm,
            "an operator or a host of the VM",
        ),
    };
    if allowed {
        Ok(())
    } else {
        Err(format!("{id} may not {what} VM {vm:?} ({rule} may)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftvm_tls::Role;

    fn host(vms: &[&str]) -> Peer {
        Peer::Verified(Identity::new(Role::Host, "h", vms))
    }

    #[test]
    fn exports_belong_to_vms_by_name() {
        assert!(export_of_vm("vm0", "vm0"));
        assert!(export_of_vm("vm0-disk1", "vm0"));
        assert!(!export_of_vm("vm01", "vm0"));
        assert!(!export_of_vm("vm", "vm0"));
        assert!(!export_of_vm("xvm0", "vm0"));
        assert!(may_open_export(&host(&["vm0"]), "vm0-data").is_ok());
        assert!(may_open_export(&host(&["vm1"]), "vm0").is_err());
        let op = Peer::Verified(Identity::new(Role::Operator, "o", &[]));
        assert!(may_open_export(&op, "anything").is_ok());
        let st = Peer::Verified(Identity::new(Role::Storage, "s", &[]));
        assert!(may_open_export(&st, "vm0").is_err());
        assert!(may_open_export(&Peer::Unauthenticated, "vm0").is_ok());
    }

    #[test]
    fn arbiter_rules() {
        let tas = |vm: &str| Request::TestAndSet {
            vm: vm.into(),
            generation: 1,
            claimant: "backup".into(),
        };
        let op = Peer::Verified(Identity::new(Role::Operator, "o", &[]));
        assert!(may_request(&host(&["vm0"]), &tas("vm0")).is_ok());
        assert!(may_request(&host(&["vm1"]), &tas("vm0")).is_err());
        assert!(may_request(&op, &tas("vm0")).is_err());
        let hist = Request::History { vm: "vm0".into() };
        assert!(may_request(&op, &hist).is_ok());
        assert!(may_request(&host(&["vm0"]), &hist).is_err());
        let adv = Request::Advance {
            vm: "vm0".into(),
            generation: 2,
        };
        assert!(may_request(&op, &adv).is_ok());
        assert!(may_request(&host(&["vm0"]), &adv).is_ok());
        let e = may_request(&host(&["vm1"]), &adv).unwrap_err();
        assert!(e.contains("may not advance VM \"vm0\""), "{e}");
        let q = Request::Query { vm: "vm0".into() };
        assert!(may_request(&host(&["vm1"]), &q).is_err());
        assert!(may_request(&op, &q).is_ok());
        assert!(may_request(&Peer::Unauthenticated, &adv).is_ok());
    }
}
