//! Finding the default guest image built by `guest/build.sh`: the directory
//! named by `FTVM_GUEST_DIR`, or the `latest` link the recipe maintains in
//! its cache (`$FTVM_CACHE_DIR` or `~/.cache/ftvm`).

use std::path::PathBuf;

use anyhow::{bail, Result};

pub fn default_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("FTVM_GUEST_DIR") {
        return Ok(PathBuf::from(d));
    }
    let cache = match std::env::var_os("FTVM_CACHE_DIR") {
        Some(c) => PathBuf::from(c),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/ftvm"),
            None => bail!("cannot locate the guest image: neither FTVM_GUEST_DIR nor HOME is set"),
        },
    };
    let latest = cache.join("guest/latest");
    if !latest.join("Image").exists() {
        bail!(
            "no guest image at {}: build it with guest/build.sh, or pass --kernel",
            latest.display()
        );
    }
    Ok(latest)
}
