//! kennel: a small KVM VMM for watchdog supervision. docs/ARCHITECTURE.md
//! has the code map, the boot sequence and the path of a feed and a reset.
//!
//! Four layers, each a folder: `host` (what this process gets from the
//! host), `machine` (the VM: memory, vCPUs, devices on their buses),
//! `supervision` (boot cycles, events, faults, the main loop) and
//! `interfaces` (QMP, the timeline). The entry points stay at the top.

pub mod cli;
pub mod exit_code;
pub mod host;
pub mod interfaces;
pub mod machine;
pub mod run;
pub mod supervision;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "tests") {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// docs/ARCHITECTURE.md's code map names every module of both crates
    /// (test folders aside), so the map cannot drift from the tree.
    #[test]
    fn every_module_is_in_the_architecture_code_map() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        sources(&root.join("devices/src"), &mut files);
        assert!(files.len() > 40, "found only {} sources", files.len());
        let missing: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .filter(|rel| !doc.contains(&format!("`{rel}`")))
            .collect();
        assert!(missing.is_empty(), "missing from the code map in docs/ARCHITECTURE.md: {missing:?}");
    }
}
