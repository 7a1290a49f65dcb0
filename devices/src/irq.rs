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
