#include "guest.h"

static const char *cmdline = "";

void puts(const char *s)
{
	for (; *s; s++)
		outb(0x3f8, (u8)*s);
}

void put_dec(u32 v)
{
	char b[11];
	int i = 10;
	b[i] = 0;
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(b + i);
}

void put_hex(u32 v)
{
	char b[11] = "0x";
	for (int i = 0; i < 8; i++)
		b[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 0xf];
	b[10] = 0;
	puts(b);
}

void init(u32 start_info)
{
	/* hvm_start_info: magic(0) version(4) flags(8) nr_modules(12)
	 * modlist_paddr(16, u64) cmdline_paddr(24, u64) */
	if (start_info && *(volatile u32 *)start_info == 0x336ec578)
		cmdline = (const char *)*(volatile u32 *)(start_info + 24);
	/* PIT channel 0, mode 2, full 16-bit reload: a free-running counter
	 * at 1.193182 MHz that delay_ms samples. */
	outb(0x43, 0x34);
	outb(0x40, 0);
	outb(0x40, 0);
}

static const char *find(const char *word)
{
	for (const char *p = cmdline; *p; p++) {
		if (p != cmdline && p[-1] != ' ')
			continue;
		const char *w = word, *q = p;
		while (*w && *q == *w) {
			w++;
			q++;
		}
		if (!*w && (*q == 0 || *q == ' ' || *q == '='))
			return q;
	}
	return 0;
}

int has_word(const char *word) { return find(word) != 0; }

u32 param(const char *name, u32 def)
{
	const char *q = find(name);
	if (!q || *q != '=')
		return def;
	q++;
	u32 v = 0, base = 10;
	if (q[0] == '0' && q[1] == 'x') {
		base = 16;
		q += 2;
	}
	for (;; q++) {
		u32 d;
		if (*q >= '0' && *q <= '9')
			d = (u32)(*q - '0');
		else if (base == 16 && *q >= 'a' && *q <= 'f')
			d = (u32)(*q - 'a' + 10);
		else
			break;
		v = v * base + d;
	}
	return v;
}

static u16 pit_now(void)
{
	outb(0x43, 0x00); /* latch channel 0 */
	u16 lo = inb(0x40);
	return (u16)(lo | (inb(0x40) << 8));
}

void delay_ms(u32 ms)
{
	/* 1193.182 ticks per ms, without 64-bit division (no libgcc here). */
	u64 want = (u64)ms * 1193 + ms * 182u / 1000u, got = 0; /* ms < 23e6 */
	u16 prev = pit_now();
	while (got < want) {
		u16 now = pit_now();
		got += (u16)(prev - now); /* counts down, wraps at 65536 */
		prev = now;
	}
}

static u32 cfg_addr(u8 slot, u8 reg) { return 0x80000000u | ((u32)slot << 11) | (reg & 0xfc); }

u32 pci_read(u8 slot, u8 reg, int width)
{
	outl(0xcf8, cfg_addr(slot, reg));
	if (width == 1)
		return inb((u16)(0xcfc + (reg & 3)));
	if (width == 2)
		return inw((u16)(0xcfc + (reg & 2)));
	return inl(0xcfc);
}

void pci_write(u8 slot, u8 reg, int width, u32 v)
{
	outl(0xcf8, cfg_addr(slot, reg));
	if (width == 1)
		outb((u16)(0xcfc + (reg & 3)), (u8)v);
	else if (width == 2)
		outw((u16)(0xcfc + (reg & 2)), (u16)v);
	else
		outl(0xcfc, v);
}

u8 pci_find(u16 vendor, u16 device)
{
	for (u8 s = 0; s < 32; s++)
		if (pci_read(s, 0, 4) == ((u32)device << 16 | vendor))
			return s;
	return 0xff;
}

void reset_via_keyboard(void) { outb(0x64, 0xfe); }

void halt_forever(void)
{
	for (;;)
		__asm__ volatile("hlt");
}
