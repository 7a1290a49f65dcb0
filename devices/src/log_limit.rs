//! Rate limiting for log lines a guest can provoke.
//!
//! A guest that hammers a register must not be able to flood the host's log
//! (or slow the vCPU thread down writing it), yet the first occurrences are
//! exactly what an operator needs to see. So: log the first few, then only
//! every Nth, and say how many there have been.

/// Counts occurrences of one kind of event and says which ones to log.
#[derive(Clone, Debug)]
pub struct LogLimit {
    first: u64,
    every: u64,
    seen: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(5, 1000)
    }
}

impl LogLimit {
    /// Log the first `first` occurrences, then one in every `every`.
    pub const fn new(first: u64, every: u64) -> Self {
        Self { first, every, seen: 0 }
    }

    /// Records one occurrence; returns its ordinal (1-based) when it should be
    /// logged.
    pub fn hit(&mut self) -> Option<u64> {
        self.seen = self.seen.saturating_add(1);
        let n = self.seen;
        (n <= self.first || (self.every > 0 && n % self.every == 0)).then_some(n)
    }

    /// How many occurrences have been recorded.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// `log::warn!` through a [`LogLimit`], appending the occurrence count.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(n) = $limit.hit() {
            log::warn!("{} (occurrence {})", format_args!($($arg)+), n);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_few_then_every_nth() {
        let mut l = LogLimit::new(3, 10);
        let logged: Vec<u64> = (0..35).filter_map(|_| l.hit()).collect();
        assert_eq!(logged, vec![1, 2, 3, 10, 20, 30]);
        assert_eq!(l.seen(), 35);
    }

    #[test]
    fn zero_every_logs_only_the_first() {
        let mut l = LogLimit::new(1, 0);
        assert_eq!(l.hit(), Some(1));
        assert!((0..100).all(|_| l.hit().is_none()));
    }
}
