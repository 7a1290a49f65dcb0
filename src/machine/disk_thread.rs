//! The virtio-blk queue, served on a thread of its own.
//!
//! The guest tells the disk about new requests by writing a register in
//! its BAR. Left alone, that write exits to the vCPU thread, which then
//! does the disk I/O itself while the guest's vCPU stands still. With an
//! ioeventfd on the register, KVM turns the write into an eventfd signal in
//! the kernel and resumes the guest at once; this thread wakes and serves
//! the queue (`QueueServer`: each request's I/O outside the device's lock,
//! so the vCPU's ISR read after an interrupt never waits for the disk), and
//! the guest computes while its disk works (what QEMU's iothreads and
//! cloud-hypervisor's virtio threads do). Where KVM refuses
//! the ioeventfd, the write still reaches the device through the bus and
//! the vCPU serves the queue as before: slower, never wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use kennel_devices::virtio_blk::{QueueServer, VirtioBlk};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::host::seccomp::{self, Program, ThreadKind};

/// Errors starting the thread. Registration being refused is not one: the
/// queue is then served on the vCPU threads.
#[derive(Debug, thiserror::Error)]
pub enum DiskThreadError {
    #[error("cannot create the disk's notification eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot start the disk thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the disk thread cannot confine itself: {0}")]
    Seccomp(#[source] seccomp::SeccompError),
    #[error("the disk thread ended before it could serve")]
    Died,
}

pub struct DiskThread {
    kick: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl DiskThread {
    /// Starts the thread that serves the queue and hangs an ioeventfd on
    /// the device's notification register for it; `None` when KVM will not
    /// take the ioeventfd. The thread confines itself with `seccomp` first:
    /// it makes the system calls a vCPU thread makes for the disk (reads,
    /// writes, KVM_IRQ_LINE), so it runs under the vCPU filter.
    pub fn start(
        vm: &VmFd,
        dev: Arc<Mutex<VirtioBlk>>,
        seccomp: Option<Program>,
    ) -> Result<Option<Self>, DiskThreadError> {
        let kick = Arc::new(EventFd::new(0).map_err(DiskThreadError::EventFd)?);
        let addr = dev.lock().unwrap_or_else(PoisonError::into_inner).notify_address();
        let stop = Arc::new(AtomicBool::new(false));
        let (k, s) = (kick.clone(), stop.clone());
        let (confined_tx, confined) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("kennel-disk".into())
            .spawn(move || {
                let r = seccomp.as_ref().map_or(Ok(()), |p| seccomp::install(ThreadKind::Vcpu, p));
                let confined = r.is_ok();
                let _ = confined_tx.send(r);
                if confined {
                    serve(&k, &s, &QueueServer::new(dev));
                }
            })
            .map_err(DiskThreadError::Spawn)?;
        let mut thread = Self { kick, stop, handle: Some(handle) };
        // Never serve the guest unconfined when confinement was asked for;
        // the ioeventfd goes up only once the thread is confined.
        match confined.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DiskThreadError::Seccomp(e)),
            Err(_) => return Err(DiskThreadError::Died),
        }
        if let Err(e) = vm.register_ioevent(&thread.kick, &IoEventAddress::Mmio(addr), NoDatamatch) {
            log::info!("virtio-blk: no ioeventfd at {addr:#x} ({e}): the vCPUs serve the disk's queue");
            thread.stop();
            return Ok(None);
        }
        Ok(Some(thread))
    }

    /// Lets the request in hand finish, then ends the thread: after a
    /// reset nothing of the old VM's may still touch the disk.
    pub fn stop(&mut self) {
        let Some(h) = self.handle.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.kick.write(1) {
            log::warn!("cannot wake the disk thread to stop it: {e}");
        }
        if h.join().is_err() {
            log::warn!("the disk thread panicked");
        }
    }
}

impl Drop for DiskThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(kick: &EventFd, stop: &AtomicBool, server: &QueueServer) {
    loop {
        // Several notifications since the last pass read as one: a pass
        // serves everything the driver has made available.
        if let Err(e) = kick.read() {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("the disk thread stops: cannot read its eventfd: {e}");
            return;
        }
        // Requests the driver added while a pass ran came without a
        // notification (it was asked not to send one): serve them too.
        while !stop.load(Ordering::Acquire) && server.notified() {}
        if stop.load(Ordering::Acquire) {
            return;
        }
    }
}
