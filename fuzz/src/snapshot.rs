//! The snapshot and migration-state readers (`Machine::load_snapshot`,
//! `Machine::from_state_and_ram`), what `ftvm run --snapshot` and a joining
//! backup read. A snapshot that loads must run, save and load again to the
//! same digest; anything else must be an error, without allocating the RAM
//! a corrupt header claims.

use ftvm_machine::Machine;

/// RAM of the seed machines (`src/bin/seeds.rs`).
pub const SEED_RAM: u64 = 4 << 20;

pub fn run(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let loaded = if sel & 1 == 0 {
        Machine::load_snapshot(bytes)
    } else {
        Machine::from_state_and_ram(bytes, vec![0u8; SEED_RAM as usize])
    };
    let Ok(mut m) = loaded else {
        return;
    };
    let before = m.digest();
    let mut saved = Vec::new();
    m.save_snapshot(&mut saved).expect("saving to memory");
    let mut again = Machine::load_snapshot(saved.as_slice()).expect("a saved snapshot loads");
    assert_eq!(again.digest(), before, "snapshot changed through save/load");
    // The machine runs whatever the snapshot holds, deterministically.
    let _ = m.run(2_000);
    let _ = again.run(2_000);
    assert_eq!(
        m.digest(),
        again.digest(),
        "a machine and its copy diverged"
    );
}
