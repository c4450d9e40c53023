//! The key layout in etcd. Per VM, under the target's prefix:
//!
//! - `PREFIX/vm/NAME/state`: the generation and its holder (a
//!   [`record::State`](crate::record::State)); the test-and-set compares
//!   this key's revision and rewrites it;
//! - `PREFIX/vm/NAME/wins/GGGGGGGGGGGGGGGGGGGG`: one key per win, the
//!   generation zero-padded to 20 digits so that etcd's key order is the
//!   order of generations.
//!
//! NAME escapes `%` and `/` (as `%25`, `%2F`) so that a VM name can never
//! reach into another VM's keys.

/// `name` with `%` and `/` escaped.
pub fn escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => s.push_str("%25"),
            '/' => s.push_str("%2F"),
            c => s.push(c),
        }
    }
    s
}

fn vm_dir(prefix: &str, vm: &str) -> String {
    if prefix.is_empty() {
        format!("vm/{}/", escape(vm))
    } else {
        format!("{prefix}/vm/{}/", escape(vm))
    }
}

/// The VM's state key.
pub fn state(prefix: &str, vm: &str) -> String {
    format!("{}state", vm_dir(prefix, vm))
}

/// The prefix of the VM's win keys.
pub fn wins(prefix: &str, vm: &str) -> String {
    format!("{}wins/", vm_dir(prefix, vm))
}

/// The key of the win of `generation`.
pub fn win(prefix: &str, vm: &str, generation: u64) -> String {
    format!("{}{generation:020}", wins(prefix, vm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_directory() {
        assert_eq!(state("p", "a/b"), "p/vm/a%2Fb/state");
        assert_eq!(state("", "a%2Fb"), "vm/a%252Fb/state");
        assert_ne!(state("p", "a/b"), state("p", "a%2Fb"));
        assert!(!win("p", "vm", 7).starts_with(&state("p", "vm")));
        assert!(win("p", "vm", 9) < win("p", "vm", 10));
    }
}
