//! How a device raises an interrupt without knowing about KVM.

/// One interrupt input (a GSI). Level-triggered lines are asserted until the
/// device deasserts them; the VMM maps this to KVM_IRQ_LINE or an irqfd.
pub trait InterruptLine: Send + Sync {
    fn set_level(&self, asserted: bool);
}

/// An edge-triggered source (the serial port's irqfd, for example).
pub trait EdgeInterrupt: Send + Sync {
    fn trigger(&self);
}

/// A line that records every level it is set to, for device tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct RecordingLine(Mutex<Vec<bool>>);

    impl super::InterruptLine for RecordingLine {
        fn set_level(&self, asserted: bool) {
            crate::bus::lock(&self.0).push(asserted);
        }
    }

    impl RecordingLine {
        pub(crate) fn level(&self) -> bool {
            crate::bus::lock(&self.0).last().copied().unwrap_or(false)
        }
        pub(crate) fn changes(&self) -> usize {
            crate::bus::lock(&self.0).len()
        }
    }
}
