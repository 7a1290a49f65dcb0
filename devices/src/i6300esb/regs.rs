//! Register map of the 6300ESB watchdog (datasheet 300641, as used by Linux's
//! `drivers/watchdog/i6300esb.c`).

// PCI identity
pub const VENDOR_ID: u16 = 0x8086;
/// `PCI_DEVICE_ID_INTEL_ESB_9`, the only ID the Linux driver matches.
pub const DEVICE_ID: u16 = 0x25AB;
pub const CLASS: u8 = 0x08;
pub const SUBCLASS: u8 = 0x80;

// Config space
/// WDT configuration, 16 bits.
pub const CONFIG_REG: u16 = 0x60;
/// Current count of the running stage (undocumented; old drivers read it).
pub const COUNT_REG: u16 = 0x64;
/// WDT lock, 8 bits.
pub const LOCK_REG: u16 = 0x68;

pub const CONFIG_INT_TYPE: u16 = 0x03;
pub const INT_TYPE_IRQ: u16 = 0x00;
pub const INT_TYPE_SMI: u16 = 0x02;
pub const INT_TYPE_DISABLED: u16 = 0x03;
/// 1 = 1 MHz (PCI clock / 2^5), 0 = 1 kHz (PCI clock / 2^15).
pub const CONFIG_FREQ_1MHZ: u16 = 1 << 2;
/// 1 = the stage-2 timeout does not reach the platform.
pub const CONFIG_OUTPUT_DISABLE: u16 = 1 << 5;
pub const CONFIG_WRITABLE: u16 = CONFIG_INT_TYPE | CONFIG_FREQ_1MHZ | CONFIG_OUTPUT_DISABLE;

/// Makes the config and lock registers read-only until reset (nowayout).
pub const LOCK_LOCK: u8 = 1 << 0;
pub const LOCK_ENABLE: u8 = 1 << 1;
/// 1 = free-running: stages repeat, no timeout.
pub const LOCK_FUNC: u8 = 1 << 2;
pub const LOCK_WRITABLE: u8 = LOCK_LOCK | LOCK_ENABLE | LOCK_FUNC;

// BAR0 (memory, 16 bytes)
pub const BAR0_SIZE: u32 = 16;
pub const TIMER1_REG: u64 = 0x00;
pub const TIMER2_REG: u64 = 0x04;
pub const GINTSR_REG: u64 = 0x08;
pub const RELOAD_REG: u64 = 0x0C;

/// Preloads are 20-bit counts.
pub const PRELOAD_MASK: u32 = 0xF_FFFF;
/// GINTSR bit 0: stage 1 ended.
pub const GINTSR_INT1: u32 = 1 << 0;
/// Reload register: restart stage 1 (a feed).
pub const RELOAD_RELOAD: u32 = 1 << 8;
/// Reload register: reads 1 while the timeout flag is set; writing 1 clears it.
pub const RELOAD_TIMEOUT: u32 = 1 << 9;
pub const UNLOCK1: u32 = 0x80;
pub const UNLOCK2: u32 = 0x86;
