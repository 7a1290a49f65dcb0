//! The common configuration structure: feature negotiation, device status,
//! and the registers that describe the (single) queue.
//!
//! This module only keeps registers and enforces the order the driver must
//! follow; what a status change or a queue enable means for the device is
//! returned as an [`Effect`] for `device` to act on.

use super::regs::*;
use crate::log_limit::LogLimit;
use crate::warn_limited;

/// What the device must do after a common-config write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    None,
    /// The driver wrote 0 to device_status.
    Reset,
    /// The driver enabled queue 0; validate its registers and start it.
    EnableQueue,
}

/// Queue 0 as the driver described it. Applied to a `virtio_queue::Queue`
/// only when enabled, because the 64-bit addresses arrive in halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QueueRegs {
    pub size: u16,
    pub enabled: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

impl Default for QueueRegs {
    fn default() -> Self {
        Self { size: QUEUE_MAX_SIZE, enabled: false, desc: 0, driver: 0, device: 0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    DeviceFeatureSelect,
    DeviceFeature,
    DriverFeatureSelect,
    DriverFeature,
    MsixConfig,
    NumQueues,
    DeviceStatus,
    ConfigGeneration,
    QueueSelect,
    QueueSize,
    QueueMsixVector,
    QueueEnable,
    QueueNotifyOff,
    QueueDesc,
    QueueDriver,
    QueueDevice,
}

/// (offset, width, field), in register order.
const FIELDS: [(u64, u64, Field); 16] = [
    (DEVICE_FEATURE_SELECT, 4, Field::DeviceFeatureSelect),
    (DEVICE_FEATURE, 4, Field::DeviceFeature),
    (DRIVER_FEATURE_SELECT, 4, Field::DriverFeatureSelect),
    (DRIVER_FEATURE, 4, Field::DriverFeature),
    (MSIX_CONFIG, 2, Field::MsixConfig),
    (NUM_QUEUES, 2, Field::NumQueues),
    (DEVICE_STATUS, 1, Field::DeviceStatus),
    (CONFIG_GENERATION, 1, Field::ConfigGeneration),
    (QUEUE_SELECT, 2, Field::QueueSelect),
    (QUEUE_SIZE, 2, Field::QueueSize),
    (QUEUE_MSIX_VECTOR, 2, Field::QueueMsixVector),
    (QUEUE_ENABLE, 2, Field::QueueEnable),
    (QUEUE_NOTIFY_OFF, 2, Field::QueueNotifyOff),
    (QUEUE_DESC, 8, Field::QueueDesc),
    (QUEUE_DRIVER, 8, Field::QueueDriver),
    (QUEUE_DEVICE, 8, Field::QueueDevice),
];

/// 32 bits of `value` selected by a feature-select register.
fn window(value: u64, select: u32) -> u32 {
    match select {
        0 => value as u32,
        1 => (value >> 32) as u32,
        _ => 0,
    }
}

#[derive(Debug)]
pub(super) struct CommonCfg {
    offered: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    pub queue: QueueRegs,
    refused: LogLimit,
    failed: LogLimit,
}

impl CommonCfg {
    pub fn new(offered: u64) -> Self {
        Self {
            offered,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queue: QueueRegs::default(),
            refused: LogLimit::default(),
            failed: LogLimit::default(),
        }
    }

    /// Back to the initial state (the log limits' counts are kept).
    pub fn reset(&mut self) {
        let refused = std::mem::take(&mut self.refused);
        let failed = std::mem::take(&mut self.failed);
        *self = Self { refused, failed, ..Self::new(self.offered) };
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    /// The queue may be used: the driver said DRIVER_OK, did not give up,
    /// and the device has not asked for a reset.
    pub fn running(&self) -> bool {
        self.status & (S_DRIVER_OK | S_FAILED | S_NEEDS_RESET) == S_DRIVER_OK && self.queue.enabled
    }

    /// The device hit an error it cannot recover from without a reset.
    pub fn needs_reset(&mut self) {
        self.status |= S_NEEDS_RESET;
    }

    /// What the driver accepted; final once FEATURES_OK has stuck.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    fn snapshot(&self) -> [u8; COMMON_CFG_LEN] {
        let mut s = [0u8; COMMON_CFG_LEN];
        let mut put = |off: u64, bytes: &[u8]| {
            let o = off as usize;
            s[o..o + bytes.len()].copy_from_slice(bytes);
        };
        let q0 = self.queue_select == 0;
        let q = if q0 { self.queue } else { QueueRegs { size: 0, ..QueueRegs::default() } };
        put(DEVICE_FEATURE_SELECT, &self.device_feature_select.to_le_bytes());
        put(DEVICE_FEATURE, &window(self.offered, self.device_feature_select).to_le_bytes());
        put(DRIVER_FEATURE_SELECT, &self.driver_feature_select.to_le_bytes());
        put(DRIVER_FEATURE, &window(self.driver_features, self.driver_feature_select).to_le_bytes());
        put(MSIX_CONFIG, &NO_VECTOR.to_le_bytes());
        put(NUM_QUEUES, &NUM_QUEUES_VALUE.to_le_bytes());
        put(DEVICE_STATUS, &[self.status]);
        put(CONFIG_GENERATION, &[0]); // the device configuration never changes
        put(QUEUE_SELECT, &self.queue_select.to_le_bytes());
        put(QUEUE_SIZE, &q.size.to_le_bytes());
        put(QUEUE_MSIX_VECTOR, &NO_VECTOR.to_le_bytes());
        put(QUEUE_ENABLE, &u16::from(q.enabled).to_le_bytes());
        put(QUEUE_NOTIFY_OFF, &0u16.to_le_bytes());
        put(QUEUE_DESC, &q.desc.to_le_bytes());
        put(QUEUE_DRIVER, &q.driver.to_le_bytes());
        put(QUEUE_DEVICE, &q.device.to_le_bytes());
        s
    }

    /// Any access inside the window; bytes past the registers read zero.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let s = self.snapshot();
        for (i, d) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64);
            *d = usize::try_from(o).ok().and_then(|o| s.get(o)).copied().unwrap_or(0);
        }
    }

    /// A write of 1, 2, 4 or 8 bytes that must lie inside one register;
    /// a partial write (a byte of the feature word, a half of an address)
    /// replaces just those bytes.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Effect {
        let len = data.len() as u64;
        let hit = FIELDS.iter().find(|(o, w, _)| offset >= *o && offset < o + w);
        let Some(&(foff, width, field)) = hit.filter(|(o, w, _)| offset + len <= o + w) else {
            warn_limited!(self.refused, "virtio-blk: common cfg write of {len} bytes at {offset:#x} ignored");
            return Effect::None;
        };
        let mut bytes = [0u8; 8];
        self.read(foff, &mut bytes[..width as usize]);
        let at = (offset - foff) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
        self.apply(field, u64::from_le_bytes(bytes))
    }

    fn apply(&mut self, field: Field, v: u64) -> Effect {
        match field {
            Field::DeviceFeatureSelect => self.device_feature_select = v as u32,
            Field::DriverFeatureSelect => self.driver_feature_select = v as u32,
            Field::DriverFeature => self.write_driver_features(v as u32),
            Field::DeviceStatus => return self.write_status(v as u8),
            Field::QueueSelect => self.queue_select = v as u16,
            // No MSI-X: the register keeps reading NO_VECTOR, which tells
            // the driver the write did not take. Linux only writes it when
            // it found MSI-X, which we do not have.
            Field::MsixConfig | Field::QueueMsixVector => {}
            Field::DeviceFeature | Field::NumQueues | Field::ConfigGeneration | Field::QueueNotifyOff => {
                warn_limited!(self.refused, "virtio-blk: write to read-only {field:?} ignored");
            }
            Field::QueueSize
            | Field::QueueEnable
            | Field::QueueDesc
            | Field::QueueDriver
            | Field::QueueDevice => {
                return self.write_queue(field, v);
            }
        }
        Effect::None
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status & S_FEATURES_OK != 0 {
            warn_limited!(self.refused, "virtio-blk: driver features written after FEATURES_OK; ignored");
            return;
        }
        let v = u64::from(v);
        self.driver_features = match self.driver_feature_select {
            0 => (self.driver_features & !0xFFFF_FFFF) | v,
            1 => (self.driver_features & 0xFFFF_FFFF) | v << 32,
            _ => self.driver_features, // no features up there; nothing to accept
        };
    }

    /// The status state machine. The driver only ever adds bits, in the
    /// order ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK (or FAILED at any
    /// point); writing 0 resets. NEEDS_RESET belongs to the device.
    fn write_status(&mut self, v: u8) -> Effect {
        if v == 0 {
            return Effect::Reset;
        }
        let old = self.status & !S_NEEDS_RESET;
        let mut new = v & !S_NEEDS_RESET;
        if old & !new != 0 {
            warn_limited!(self.refused, "virtio-blk: status {old:#x} -> {new:#x} clears bits; ignored");
            return Effect::None;
        }
        if new & S_FEATURES_OK != 0 && old & S_FEATURES_OK == 0 && !self.features_acceptable() {
            // Leaving FEATURES_OK clear is how the device says no; the
            // driver reads the status back and gives up.
            warn_limited!(
                self.refused,
                "virtio-blk: refusing driver features {:#x} (offered {:#x}, VERSION_1 required)",
                self.driver_features,
                self.offered
            );
            new &= !S_FEATURES_OK;
        }
        if new & S_DRIVER_OK != 0 && new & S_FEATURES_OK == 0 {
            warn_limited!(self.refused, "virtio-blk: DRIVER_OK without FEATURES_OK; ignored");
            new &= !S_DRIVER_OK;
        }
        if new & S_FAILED != 0 && old & S_FAILED == 0 {
            warn_limited!(self.failed, "virtio-blk: the driver set FAILED (status {new:#x})");
        }
        self.status = new | (self.status & S_NEEDS_RESET);
        Effect::None
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered == 0 && self.driver_features & F_VERSION_1 != 0
    }

    fn write_queue(&mut self, field: Field, v: u64) -> Effect {
        if self.queue_select != 0 {
            warn_limited!(self.refused, "virtio-blk: {field:?} write for absent queue {}", self.queue_select);
            return Effect::None;
        }
        if self.queue.enabled {
            // Only a reset takes an enabled queue back (there is no RING_RESET).
            warn_limited!(self.refused, "virtio-blk: {field:?} write to an enabled queue ignored");
            return Effect::None;
        }
        match field {
            Field::QueueSize => self.queue.size = v as u16,
            Field::QueueDesc => self.queue.desc = v,
            Field::QueueDriver => self.queue.driver = v,
            Field::QueueDevice => self.queue.device = v,
            _ if v == 1 => {
                self.queue.enabled = true;
                return Effect::EnableQueue;
            }
            _ => warn_limited!(self.refused, "virtio-blk: queue_enable write of {v} ignored"),
        }
        Effect::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(c: &CommonCfg, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        c.read(off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    #[test]
    fn feature_windows_and_partial_writes() {
        let mut c = CommonCfg::new(F_VERSION_1 | F_FLUSH);
        assert_eq!(rd(&c, DEVICE_FEATURE, 4), F_FLUSH);
        c.write(DEVICE_FEATURE_SELECT, &1u32.to_le_bytes());
        assert_eq!(rd(&c, DEVICE_FEATURE, 4), 1);
        c.write(DEVICE_FEATURE_SELECT, &2u32.to_le_bytes());
        assert_eq!(rd(&c, DEVICE_FEATURE, 4), 0);
        c.write(DRIVER_FEATURE_SELECT, &1u32.to_le_bytes());
        c.write(DRIVER_FEATURE, &[1]);
        assert_eq!(c.driver_features(), F_VERSION_1);
        // Writes straddling two registers, or past them, change nothing.
        c.write(DRIVER_FEATURE + 2, &[0xFF; 4]);
        c.write(0x40, &[0xFF]);
        assert_eq!(c.driver_features(), F_VERSION_1);
        assert_eq!(rd(&c, 0x40, 8), 0);
    }

    #[test]
    fn queue_address_halves_and_absent_queues() {
        let mut c = CommonCfg::new(F_VERSION_1);
        c.write(QUEUE_DESC, &0x1000u32.to_le_bytes());
        c.write(QUEUE_DESC + 4, &2u32.to_le_bytes());
        c.write(QUEUE_DRIVER, &0x3000u64.to_le_bytes());
        assert_eq!((c.queue.desc, c.queue.driver), (0x2_0000_1000, 0x3000));
        c.write(QUEUE_SELECT, &1u16.to_le_bytes());
        assert_eq!(rd(&c, QUEUE_SIZE, 2), 0);
        assert_eq!(c.write(QUEUE_ENABLE, &1u16.to_le_bytes()), Effect::None);
        c.write(QUEUE_SELECT, &0u16.to_le_bytes());
        assert_eq!(rd(&c, QUEUE_SIZE, 2), u64::from(QUEUE_MAX_SIZE));
        assert_eq!(c.write(QUEUE_ENABLE, &1u16.to_le_bytes()), Effect::EnableQueue);
        c.write(QUEUE_DESC, &0u64.to_le_bytes());
        assert_eq!(c.queue.desc, 0x2_0000_1000, "enabled queues are frozen");
    }

    #[test]
    fn status_only_grows_until_reset() {
        let mut c = CommonCfg::new(F_VERSION_1);
        c.write(DEVICE_STATUS, &[S_ACKNOWLEDGE]);
        c.write(DEVICE_STATUS, &[S_DRIVER]);
        assert_eq!(c.status(), S_ACKNOWLEDGE);
        c.needs_reset();
        c.write(DEVICE_STATUS, &[S_ACKNOWLEDGE | S_DRIVER]);
        assert_eq!(c.status(), S_ACKNOWLEDGE | S_DRIVER | S_NEEDS_RESET);
        assert_eq!(c.write(DEVICE_STATUS, &[0]), Effect::Reset);
        c.reset();
        assert_eq!(c.status(), 0);
    }
}
