//! The main loop's timers: non-blocking timerfds on the monotonic clock.
//!
//! Non-blocking matters. One epoll wakeup can report several fds, and the
//! handler of the first may re-arm the timer of a later one (every wakeup
//! ends by re-arming the watchdog's timer; a VM rebuild re-arms several).
//! `timerfd_settime` clears a pending expiry, so a blocking read of that
//! timer would then wait for its new deadline, or for ever if it was
//! disarmed, with the whole main loop (QMP, signals, the watchdog) stuck in
//! it. CI caught exactly that once: the main thread asleep in
//! `timerfd_read` for over a minute after a watchdog reset.

use std::io;
use std::os::fd::FromRawFd;
use std::time::Duration;

use vmm_sys_util::timerfd::TimerFd;

/// A disarmed, non-blocking, close-on-exec timer.
pub(super) fn new() -> io::Result<TimerFd> {
    // SAFETY: timerfd_create takes no pointers; a non-negative result is a
    // new fd that nothing else owns, so TimerFd may take it.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above; `fd` is valid and owned by nobody else.
    Ok(unsafe { TimerFd::from_raw_fd(fd) })
}

/// Arms `t` for clock time `at` (None disarms). timerfd treats a zero delay
/// as "disarm", so a deadline already passed fires after a microsecond.
pub(super) fn arm(t: &mut TimerFd, at: Option<Duration>, now: Duration) {
    let delay = at.map_or(Duration::ZERO, |at| at.saturating_sub(now).max(Duration::from_micros(1)));
    if let Err(e) = t.reset(delay, None) {
        log::error!("cannot arm a main-loop timer: {e}");
    }
}

/// Consumes `t`'s expiries; false when it has none (it was re-armed or
/// disarmed after epoll reported it), so the caller acts only on a timer
/// that really expired and never waits.
pub(super) fn fired(t: &mut TimerFd) -> bool {
    match t.wait() {
        Ok(n) => n > 0,
        Err(e) if e.errno() == libc::EAGAIN => false,
        Err(e) => {
            log::error!("cannot read a main-loop timer: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn expired_timer() -> TimerFd {
        let mut t = new().unwrap();
        arm(&mut t, Some(Duration::from_micros(1)), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        t
    }

    #[test]
    fn an_expired_timer_fires_once() {
        let mut t = expired_timer();
        assert!(fired(&mut t));
        assert!(!fired(&mut t), "its expiry was consumed");
    }

    #[test]
    fn a_timer_disarmed_after_it_expired_does_not_block_the_reader() {
        let mut t = expired_timer();
        arm(&mut t, None, Duration::ZERO);
        let start = Instant::now();
        assert!(!fired(&mut t));
        assert!(start.elapsed() < Duration::from_secs(1), "the read returned at once");
    }

    #[test]
    fn a_timer_rearmed_later_after_it_expired_does_not_fire_early() {
        let mut t = expired_timer();
        arm(&mut t, Some(Duration::from_secs(3600)), Duration::ZERO);
        let start = Instant::now();
        assert!(!fired(&mut t));
        assert!(start.elapsed() < Duration::from_secs(1), "the read returned at once");
    }
}
