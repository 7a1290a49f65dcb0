/* Drives the 6300ESB the way Linux's i6300esb driver does, from the
 * command line:
 *   heartbeat=S       preloads = S << 9 in both stages (1 kHz), default 2
 *   preload1= preload2=  override the preloads
 *   config=X          value for config register 0x60 (default 0x0003)
 *   nowayout          set LOCK together with ENABLE, then try to disarm
 *   feeds=N interval_ms=M   N feeds M ms apart (default 3, 500)
 *   bench_feeds=N     N back-to-back feeds, no output (feed-cost benchmark)
 *   then one of: disarm (clear ENABLE), reset (keyboard reset), or nothing
 *   (stop feeding and halt, so the watchdog expires).
 * Every step prints one "esb: ..." line on COM1. */
#include "guest.h"

static u32 bar;

static void unlock(void)
{
	mmio_w16(bar + 0xc, 0x80);
	mmio_w16(bar + 0xc, 0x86);
}

static void feed(void)
{
	unlock();
	mmio_w16(bar + 0xc, 0x100);
}

void guest_main(u32 start_info)
{
	init(start_info);
	u8 slot = pci_find(0x8086, 0x25ab);
	if (slot == 0xff) {
		puts("esb: not found\n");
		halt_forever();
	}
	bar = pci_read(slot, 0x10, 4) & ~0xfu;
	pci_write(slot, 0x04, 2, pci_read(slot, 0x04, 2) | 2);
	puts("esb: found slot=");
	put_dec(slot);
	puts(" bar0=");
	put_hex(bar);
	puts("\n");

	pci_write(slot, 0x60, 2, param("config", 0x0003));
	if (pci_read(slot, 0x68, 1) & 1)
		puts("esb: lock already set\n");
	pci_write(slot, 0x68, 1, 0);
	unlock();
	u16 reload = mmio_r16(bar + 0xc);
	puts("esb: timeout_flag=");
	put_dec((reload >> 9) & 1);
	puts("\n");
	if (reload & 0x200) {
		unlock();
		mmio_w16(bar + 0xc, 0x200);
	}

	u32 hb = param("heartbeat", 2);
	unlock();
	mmio_w32(bar + 0x0, param("preload1", hb << 9));
	unlock();
	mmio_w32(bar + 0x4, param("preload2", hb << 9));
	feed();

	int nowayout = has_word("nowayout");
	pci_write(slot, 0x68, 1, nowayout ? 0x3 : 0x2);
	puts("esb: armed\n");
	if (nowayout) {
		pci_write(slot, 0x68, 1, 0);
		pci_write(slot, 0x60, 2, 0x0020);
		puts("esb: after disarm attempt lock=");
		put_hex(pci_read(slot, 0x68, 1));
		puts(" config=");
		put_hex(pci_read(slot, 0x60, 2));
		puts("\n");
	}

	u32 feeds = param("feeds", 3), interval = param("interval_ms", 500);
	for (u32 i = 1; i <= feeds; i++) {
		delay_ms(interval);
		feed();
		puts("esb: feed ");
		put_dec(i);
		puts("\n");
	}
	u32 bench = param("bench_feeds", 0);
	if (bench) {
		for (u32 i = 0; i < bench; i++)
			feed();
		puts("esb: bench done\n");
	}

	if (has_word("disarm")) {
		pci_write(slot, 0x68, 1, 0);
		puts("esb: disarmed\n");
	} else if (has_word("reset")) {
		puts("esb: resetting\n");
		reset_via_keyboard();
	} else {
		puts("esb: stopped feeding\n");
	}
	halt_forever();
}
