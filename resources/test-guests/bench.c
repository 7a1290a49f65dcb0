/* The benchmark guest (scripts/bench). Its first action is one byte 'K' on
 * COM1 (so a host can time process start, or a reset, to the guest's first
 * instruction), then a newline. Then, from the command line:
 *   arm [preload1=N preload2=N]  program the 6300ESB as Linux's driver
 *                    does (defaults 0x200 each: about 1 s per stage), print
 *                    "bench: armed" and stop feeding, so it expires and
 *                    resets the VM (the next boot prints 'K' again)
 *   feed_after_ms=M  with arm: M ms after arming, feed once and print
 *                    "bench: fed" (the last feed before the expiry)
 *   bench_feeds=N    with arm: N back-to-back feeds after "bench: armed",
 *                    then "bench: done" (the feed-cost benchmark)
 *   reset            reset through the keyboard controller: at once, or with
 *                    arm after bench_feeds
 * A BAR0 that reads 0 (QEMU with qboot assigns none) is set to 0xfe000000;
 * kennel's BAR is fixed and already set.
 *   otherwise        halt. */
#include "guest.h"

static u32 bar;

static void unlock(void)
{
	mmio_w16(bar + 0xc, 0x80);
	mmio_w16(bar + 0xc, 0x86);
}

void guest_main(u32 start_info)
{
	outb(0x3f8, 'K');
	outb(0x3f8, '\n');
	init(start_info);
	if (has_word("reset") && !has_word("arm"))
		reset_via_keyboard();
	if (!has_word("arm"))
		halt_forever();
	u8 slot = pci_find(0x8086, 0x25ab);
	if (slot == 0xff) {
		puts("bench: no 6300esb\n");
		halt_forever();
	}
	bar = pci_read(slot, 0x10, 4) & ~0xfu;
	if (!bar) {
		pci_write(slot, 0x10, 4, 0xfe000000);
		bar = pci_read(slot, 0x10, 4) & ~0xfu;
	}
	pci_write(slot, 0x04, 2, pci_read(slot, 0x04, 2) | 2);
	pci_write(slot, 0x60, 2, 0x0003);
	pci_write(slot, 0x68, 1, 0);
	unlock();
	if (mmio_r16(bar + 0xc) & 0x200) { /* clear the timeout flag */
		unlock();
		mmio_w16(bar + 0xc, 0x200);
	}
	unlock();
	mmio_w32(bar + 0x0, param("preload1", 0x200));
	unlock();
	mmio_w32(bar + 0x4, param("preload2", 0x200));
	unlock();
	mmio_w16(bar + 0xc, 0x100);
	pci_write(slot, 0x68, 1, 0x2);
	puts("bench: armed\n");
	u32 n = param("bench_feeds", 0);
	if (n) {
		for (u32 i = 0; i < n; i++) {
			unlock();
			mmio_w16(bar + 0xc, 0x100);
		}
		puts("bench: done\n");
		if (has_word("reset"))
			reset_via_keyboard();
	}
	u32 after = param("feed_after_ms", 0);
	if (after) {
		delay_ms(after);
		unlock();
		mmio_w16(bar + 0xc, 0x100);
		puts("bench: fed\n");
	}
	halt_forever();
}
