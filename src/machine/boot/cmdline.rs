//! The kernel command line a boot cycle gets.

use crate::machine::pvm;

/// What the cycle's command line is made of.
pub struct CmdlineInput<'a> {
    /// The user's `--cmdline`, or a `boot:cmdline` fault's text for this cycle.
    pub base: &'a str,
    /// A root disk is attached (and whether it is read-only).
    pub rootfs: Option<bool>,
    pub pvm: bool,
}

fn has(s: &str, key: &str) -> bool {
    s.split_whitespace().any(|w| w == key || w.strip_prefix(key).is_some_and(|r| r.starts_with('=')))
}

/// The base, plus `root=/dev/vda` for an attached disk unless the base names
/// a root, plus the PVM settings the base does not already set.
pub fn effective(i: &CmdlineInput<'_>) -> String {
    let mut s = i.base.trim().to_string();
    let mut add = |opt: &str| {
        let key = opt.split('=').next().unwrap_or(opt);
        if !has(&s, key) {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(opt);
        }
    };
    if let Some(readonly) = i.rootfs {
        if !has(i.base, "root") {
            add("root=/dev/vda");
            add(if readonly { "ro" } else { "rw" });
        }
    }
    if i.pvm {
        for opt in pvm::CMDLINE_EXTRA.split_whitespace() {
            add(opt);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eff(base: &str, rootfs: Option<bool>, pvm: bool) -> String {
        effective(&CmdlineInput { base, rootfs, pvm })
    }

    #[test]
    fn pvm_settings_are_appended_once_and_user_choices_win() {
        let c = eff("console=ttyS0 lpj=1", None, true);
        assert!(c.starts_with("console=ttyS0 lpj=1 "));
        assert!(!c.contains("lpj=5000000"), "user's lpj must win: {c}");
        assert!(c.contains("noxsave") && c.contains("clearcpuid=308,151"));
        assert_eq!(eff(" console=ttyS0 ", None, false), "console=ttyS0");
        assert_eq!(eff(&c, None, true), c);
    }

    #[test]
    fn root_is_added_for_a_disk_unless_given() {
        assert_eq!(eff("console=ttyS0", Some(false), false), "console=ttyS0 root=/dev/vda rw");
        assert_eq!(eff("console=ttyS0", Some(true), false), "console=ttyS0 root=/dev/vda ro");
        assert_eq!(eff("root=/dev/vdb", Some(false), false), "root=/dev/vdb");
        assert_eq!(eff("console=ttyS0", None, false), "console=ttyS0");
        // "rootwait" is not "root".
        assert!(eff("rootwait", Some(false), false).contains("root=/dev/vda"));
    }
}
